terraform {
  # spotrun reads the machine-readable `-json` UI of apply; 1.5 is the oldest release it was written against.
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}
