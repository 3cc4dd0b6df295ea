# peerfind on AWS: peer_count EC2 hosts, one peer each (directory, transfer, indexer and
# Prometheus under docker compose), in a VPC of their own. The files:
#
#   peers.tf     the peers known at plan time: addresses, friends, configs, cloud-init
#   network.tf   VPC, public subnet, internet gateway, routes, flow logs, security groups
#   compute.tf   instance role (SSM), the instances
#   outputs.tf   URLs and ready-to-paste commands
#
# README.md beside this file: prerequisites, cost, apply / verify / destroy, scaling.

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}

locals {
  tags = merge(var.tags, {
    Project    = "peerfind"
    Deployment = var.name
    ManagedBy  = "terraform"
  })

  cluster_token = random_password.cluster_token.result

  # The AMI follows the instance type's architecture (t3: x86_64, t4g: arm64).
  architecture = contains(data.aws_ec2_instance_type.peer.supported_architectures, "arm64") ? "arm64" : "x86_64"
  ubuntu_arch  = local.architecture == "arm64" ? "arm64" : "amd64"

  # The first availability zone (by name) that offers the instance type. Only the
  # region's own zones (us-east-1a, ...), not Local or Wavelength Zones; the subnet keeps
  # the zone it was created in (network.tf), so a zone added later never moves it.
  availability_zones = sort([
    for zone in data.aws_ec2_instance_type_offerings.peer.locations : zone
    if can(regex("^${var.region}[a-z]$", zone))
  ])
  availability_zone = local.availability_zones[0]
}

# The shared secret peers present to each other on /register, /bootstrap and forwarded
# searches (docs/security.md). It reaches the hosts in user_data (readable only from the
# host itself, through IMDSv2 with hop limit 1, and by principals allowed
# ec2:DescribeInstanceAttribute) and lives in the Terraform state: keep the state private.
resource "random_password" "cluster_token" {
  length  = 48
  special = false
}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_ec2_instance_type" "peer" {
  instance_type = var.instance_type
}

data "aws_ec2_instance_type_offerings" "peer" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }

  lifecycle {
    postcondition {
      condition     = anytrue([for zone in self.locations : can(regex("^${var.region}[a-z]$", zone))])
      error_message = "No availability zone of this region offers the instance_type: choose another type or region."
    }
  }
}

# Ubuntu 24.04 LTS from Canonical: the SSM agent is preinstalled (no SSH key needed), and
# the archive carries docker.io and docker-compose-v2. The newest image at the first
# apply is kept (compute.tf ignores later AMI releases instead of replacing the peers).
data "aws_ami" "ubuntu" {
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-${local.ubuntu_arch}-server-*"]
  }

  filter {
    name   = "architecture"
    values = [local.architecture]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }

  filter {
    name   = "root-device-type"
    values = ["ebs"]
  }
}
