# `spotrun infra up` stores these in SPOTRUN_HOME/infra/outputs.json; the aws provider launches
# from them. cloud/terraform.py lists the ones it needs in REQUIRED_OUTPUTS.

output "bucket_name" {
  description = "The checkpoint bucket."
  value       = aws_s3_bucket.checkpoints.bucket
}

output "checkpoint_url_prefix" {
  description = "Prefix for job checkpoint URLs: checkpoint.url = \"<prefix>/<job name>\"."
  value       = "s3://${aws_s3_bucket.checkpoints.bucket}"
}

output "region" {
  description = "The region everything was created in, and where jobs launch."
  value       = data.aws_region.current.name
}

output "launch_template_id" {
  description = "Launch template every job instance starts from."
  value       = aws_launch_template.agent.id
}

output "launch_template_name" {
  description = "Name of that launch template."
  value       = aws_launch_template.agent.name
}

output "instance_profile_arn" {
  description = "Instance profile of job instances (the user who runs jobs needs iam:PassRole on its role)."
  value       = aws_iam_instance_profile.agent.arn
}

output "security_group_id" {
  description = "Security group of job instances (inbound only from each other: a gang's rendezvous and collectives)."
  value       = aws_security_group.agent.id
}

output "subnet_ids" {
  description = "Subnets job instances launch in: in the zone it picks, spotrun uses the first of these (by id)."
  value       = local.subnet_ids
}

output "ami_id" {
  description = "The AMI job instances boot."
  value       = local.ami_id
}

output "spotrun_wheel" {
  description = "The spotrun wheel job instances install (built by `spotrun infra up` from the spotrun it ran), in the bucket."
  value       = "s3://${aws_s3_object.spotrun_wheel.bucket}/${aws_s3_object.spotrun_wheel.key}"
}

output "spotrun_wheel_sha256" {
  description = "Its sha256, which the user data checks before installing it."
  value       = local.spotrun_wheel_sha256
}
