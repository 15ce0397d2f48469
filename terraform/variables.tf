variable "region" {
  description = "AWS region for every resource. null: the AWS provider's default (AWS_REGION, AWS_DEFAULT_REGION or the profile's region)."
  type        = string
  default     = null

  validation {
    condition     = var.region == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "region must look like an AWS region name, e.g. us-east-1 or eu-west-2."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (IAM role and instance profile, security group, launch template, bucket when bucket_name is null)."
  type        = string
  default     = "spotrun"

  validation {
    # An S3 bucket_prefix may be at most 37 characters, and "-checkpoints-" is appended to this one.
    condition     = can(regex("^[a-z][a-z0-9-]{0,23}$", var.name_prefix))
    error_message = "name_prefix must be 1-24 characters: lowercase letters, digits and '-', starting with a letter (it also prefixes the S3 bucket name)."
  }
}

variable "bucket_name" {
  description = "Name of the checkpoint bucket. null: a unique name starting with \"<name_prefix>-checkpoints-\"."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name: 3-63 characters, lowercase letters, digits, '.' and '-'."
  }
}

variable "force_destroy" {
  description = "Let `spotrun infra down` delete the bucket together with every checkpoint in it. false: a bucket that still holds objects is kept and the destroy fails on it."
  type        = bool
  default     = false
}

variable "noncurrent_version_expiration_days" {
  description = "Days an overwritten or deleted checkpoint object stays recoverable as a noncurrent version before S3 deletes it (you pay its storage until then)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "vpc_id" {
  description = "VPC of the instances' security group. null: the VPC of subnet_ids, or the region's default VPC when subnet_ids is empty."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC id such as vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Subnets instances may launch in (spotrun picks the one in the chosen zone). Empty: the VPC's default subnets, one per availability zone. Instances need a route to S3 and PyPI (public IP or NAT)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "subnet_ids must be subnet ids such as subnet-0123456789abcdef0."
  }
}

variable "ami_ssm_parameter" {
  description = "Public SSM parameter that names the current AMI. The default, the Deep Learning Base OSS Nvidia Driver GPU AMI on Ubuntu 24.04, has the NVIDIA driver and Python 3.12 (spotrun needs Python >= 3.11, so the Ubuntu 22.04 image with Python 3.10 does not work)."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"

  validation {
    condition     = startswith(var.ami_ssm_parameter, "/")
    error_message = "ami_ssm_parameter must be an SSM parameter path starting with '/'."
  }
}

variable "ami_id" {
  description = "AMI to boot instead of the one ami_ssm_parameter names (pin an image so new releases do not change running setups). It needs bash, curl, Python >= 3.11 and apt or a working `python3 -m venv`."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]+$", var.ami_id))
    error_message = "ami_id must be an AMI id such as ami-0123456789abcdef0."
  }
}

variable "root_volume_size_gb" {
  description = "Size of each instance's root volume (gp3, encrypted) in GiB: the AMI, the Python environment with PyTorch and the training data must fit."
  type        = number
  default     = 100

  validation {
    condition     = var.root_volume_size_gb >= 30 && var.root_volume_size_gb <= 16384 && floor(var.root_volume_size_gb) == var.root_volume_size_gb
    error_message = "root_volume_size_gb must be a whole number between 30 and 16384."
  }
}

variable "spotrun_wheel" {
  description = "Path to the spotrun wheel instances install: `spotrun infra up` builds it from the spotrun it runs and passes it. Terraform stores it in the checkpoint bucket under its sha256, and the user data installs it only if that digest matches; spotrun never comes from a package index."
  type        = string

  validation {
    # Its file name is written into the user data script and into the object key.
    condition     = endswith(var.spotrun_wheel, ".whl") && can(regex("^[A-Za-z0-9_.+!-]+$", basename(var.spotrun_wheel)))
    error_message = "spotrun_wheel must be the path of a wheel file (name ending in .whl, of letters, digits and _.+!- only)."
  }

  validation {
    condition     = fileexists(var.spotrun_wheel)
    error_message = "spotrun_wheel names no file: give the path of a spotrun wheel (`spotrun infra up` builds one)."
  }
}

variable "tags" {
  description = "Tags for every resource this module creates (instances get the job's tags from its spec)."
  type        = map(string)
  default     = {}
}
