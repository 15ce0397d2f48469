# What spotrun launches into: a checkpoint bucket, an instance role that can use only that
# bucket, a security group with no way in, and the launch template every job instance starts
# from. Nothing here bills by the hour; instances exist only while a job runs.

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

data "aws_region" "current" {}

# ------------------------------------------------------------------------------ network

data "aws_subnet" "given" {
  for_each = toset(var.subnet_ids)
  id       = each.value
}

locals {
  # The given VPC, else the given subnets' VPC, else (both left out) the region's default VPC.
  requested_vpc_id = var.vpc_id != null ? var.vpc_id : (length(var.subnet_ids) > 0 ? data.aws_subnet.given[var.subnet_ids[0]].vpc_id : null)
}

data "aws_vpc" "selected" {
  id      = local.requested_vpc_id
  default = local.requested_vpc_id == null
}

data "aws_subnets" "default_for_az" {
  count = length(var.subnet_ids) == 0 ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.selected.id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

locals {
  subnet_ids = length(var.subnet_ids) > 0 ? var.subnet_ids : sort(data.aws_subnets.default_for_az[0].ids)
}

# Agents and the controller talk only through the bucket, so nothing outside may connect in; the
# one inbound rule lets the instances of a multi-node gang reach each other (the rendezvous on
# rank 0 and the collectives). Egress is open: S3, PyPI (spotrun's dependencies), the metadata service.
resource "aws_security_group" "agent" {
  name        = "${var.name_prefix}-agent"
  description = "spotrun agents: inbound only from each other, all outbound"
  vpc_id      = data.aws_vpc.selected.id

  # Inline rules: Terraform removes any inbound rule added by hand.
  ingress {
    description = "gang members: rendezvous and collectives"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    self        = true
  }

  egress {
    description      = "S3, PyPI and AWS APIs"
    from_port        = 0
    to_port          = 0
    protocol         = "-1"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
}

# ------------------------------------------------------------------------------ bucket

resource "aws_s3_bucket" "checkpoints" {
  bucket        = var.bucket_name
  bucket_prefix = var.bucket_name == null ? "${var.name_prefix}-checkpoints-" : null
  force_destroy = var.force_destroy
}

# Versioning keeps a checkpoint recoverable for a while after retention deletes or a bug
# overwrites it; the lifecycle rule below bounds what that costs.
resource "aws_s3_bucket_versioning" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Checkpoints, heartbeats and the spotrun wheel travel only over TLS: every request without it is
# refused, whoever signs it. A Deny for everyone is not a public policy, so block_public_policy
# lets it in.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.checkpoints.arn, "${aws_s3_bucket.checkpoints.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  policy = data.aws_iam_policy_document.bucket.json

  # S3 refuses a bucket policy while the public access block is being changed.
  depends_on = [aws_s3_bucket_public_access_block.checkpoints]
}

resource "aws_s3_bucket_lifecycle_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id

  # S3 refuses noncurrent-version rules until versioning is on.
  depends_on = [aws_s3_bucket_versioning.checkpoints]

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    # Delete markers left once their last noncurrent version has expired.
    expiration {
      expired_object_delete_marker = true
    }

    # An instance taken away mid-upload leaves parts that are billed but never visible.
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
}

# ------------------------------------------------------------------------------ instance role

data "aws_iam_policy_document" "assume_from_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# IAM names are global to the account, so a prefix keeps two regions' setups apart.
resource "aws_iam_role" "agent" {
  name_prefix        = "${var.name_prefix}-agent-"
  description        = "spotrun agents: read and write checkpoints in ${aws_s3_bucket.checkpoints.bucket}, nothing else"
  assume_role_policy = data.aws_iam_policy_document.assume_from_ec2.json
}

# Least privilege: the agent reads its job from instance tags through the metadata service,
# so it needs no EC2 permission at all, only the checkpoint bucket.
data "aws_iam_policy_document" "checkpoints" {
  statement {
    sid       = "ListCheckpointBucket"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.checkpoints.arn]
  }

  statement {
    sid = "ReadWriteCheckpoints"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.checkpoints.arn}/*"]
  }
}

resource "aws_iam_role_policy" "checkpoints" {
  name   = "checkpoint-bucket"
  role   = aws_iam_role.agent.id
  policy = data.aws_iam_policy_document.checkpoints.json
}

resource "aws_iam_instance_profile" "agent" {
  name_prefix = "${var.name_prefix}-agent-"
  role        = aws_iam_role.agent.name
}

# ------------------------------------------------------------------------------ spotrun itself

# Instances install exactly the spotrun that ran `spotrun infra up`: the wheel it built from its own
# installation, kept here under its sha256 (outside every job's default prefix: a job name cannot
# start with "_"). The user data checks that digest again before installing: the instance role may write
# anywhere in the bucket, so a job's code could replace the object, but not the digest in the
# launch template. A new wheel is a new key, created before the old one goes.
locals {
  spotrun_wheel_sha256 = filesha256(var.spotrun_wheel)
  spotrun_wheel_name   = basename(var.spotrun_wheel)
}

resource "aws_s3_object" "spotrun_wheel" {
  bucket       = aws_s3_bucket.checkpoints.id
  key          = "_spotrun/wheels/${local.spotrun_wheel_sha256}/${local.spotrun_wheel_name}"
  source       = var.spotrun_wheel
  content_type = "application/zip"

  lifecycle {
    create_before_destroy = true
  }
}

# ------------------------------------------------------------------------------ launch template

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = var.ami_ssm_parameter
}

locals {
  ami_id = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.ami[0].value)
}

# Only for the root device's name, which differs between images (/dev/sda1, /dev/xvda).
data "aws_ami" "selected" {
  filter {
    name   = "image-id"
    values = [local.ami_id]
  }
}

resource "aws_launch_template" "agent" {
  name                   = "${var.name_prefix}-agent"
  description            = "spotrun job instances: install the controller's spotrun wheel, run the agent for the job in the instance's tags, shut down"
  image_id               = local.ami_id
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.agent.id]

  # The user data shuts the instance down when the agent is done; terminating then stops the bill
  # and tells the controller the agent exited (rather than the host being lost).
  instance_initiated_shutdown_behavior = "terminate"

  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    bucket       = aws_s3_object.spotrun_wheel.bucket
    wheel_key    = aws_s3_object.spotrun_wheel.key
    wheel_name   = local.spotrun_wheel_name
    wheel_sha256 = local.spotrun_wheel_sha256
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.agent.arn
  }

  # IMDSv2 only (a token per session); hop limit 2 so a container on the instance can still reach
  # it; tags in metadata because that is where the agent reads its job.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "enabled"
  }

  block_device_mappings {
    device_name = data.aws_ami.selected.root_device_name

    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  lifecycle {
    precondition {
      condition     = length(local.subnet_ids) > 0
      error_message = "VPC ${data.aws_vpc.selected.id} has no default subnets: set subnet_ids."
    }

    precondition {
      condition     = alltrue([for subnet in data.aws_subnet.given : subnet.vpc_id == data.aws_vpc.selected.id])
      error_message = "Every subnet in subnet_ids must be in VPC ${data.aws_vpc.selected.id}."
    }
  }
}
