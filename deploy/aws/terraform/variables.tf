# Every input: typed, described and validated. Only allowed_cidr and repo_url have no
# default (terraform.tfvars.example shows them all).

variable "region" {
  type        = string
  description = "AWS region to deploy into."
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1 or eu-west-3."
  }
}

variable "name" {
  type        = string
  description = "Prefix of every resource name and the Name tags (one deployment per name and region)."
  default     = "peerfind"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 lower-case letters, digits or -, starting with a letter."
  }
}

variable "peer_count" {
  type        = number
  description = "How many peers, one EC2 host each: peer N bootstraps to peer N-1 and, from peer3 on, keeps peer1 as backup."
  default     = 3

  validation {
    condition     = var.peer_count >= 1 && var.peer_count <= 50 && floor(var.peer_count) == var.peer_count
    error_message = "peer_count must be a whole number from 1 to 50."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of every peer host (x86_64 or arm64: the AMI follows). 2 GiB of memory is the minimum to build the images on the host."
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as t3.small or t4g.small."
  }
}

variable "root_volume_size_gb" {
  type        = number
  description = "Size of each host's encrypted gp3 root volume in GiB (OS, Docker images and build cache, the peer's index)."
  default     = 20

  validation {
    condition     = var.root_volume_size_gb >= 10 && var.root_volume_size_gb <= 500 && floor(var.root_volume_size_gb) == var.root_volume_size_gb
    error_message = "root_volume_size_gb must be a whole number from 10 to 500."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "IPv4 CIDR of the VPC (a private range, /16 to /23). The peers' subnet is its second /24 and peer N gets host number 10 + N (10.42.1.11, .12, ...)."
  default     = "10.42.0.0/16"

  validation {
    condition = (
      can(regex("^[0-9.]+/(1[6-9]|2[0-3])$", var.vpc_cidr)) &&
      try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false) &&
      anytrue([
        for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] :
        try(cidrsubnet(format("%s/%s", split("/", var.vpc_cidr)[0], split("/", private)[1]), 0, 0) == private, false)
      ])
    )
    error_message = "vpc_cidr must be a network address inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 with a prefix from /16 to /23, such as 10.42.0.0/16."
  }
}

variable "allowed_cidr" {
  type        = string
  description = "The one IPv4 network allowed to reach the peers' REST (8000), gRPC (50051) and Prometheus (9090) ports, e.g. your address as 203.0.113.7/32. Networks wider than /8 (0.0.0.0/0 included) need allow_public = true."

  validation {
    condition = (
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", var.allowed_cidr)) &&
      try(cidrsubnet(var.allowed_cidr, 0, 0) == var.allowed_cidr, false)
    )
    error_message = "allowed_cidr must be an IPv4 network address with its prefix, such as 203.0.113.7/32 (host bits zero: 203.0.113.0/24, not 203.0.113.7/24)."
  }

  validation {
    condition     = var.allow_public || try(tonumber(split("/", var.allowed_cidr)[1]) >= 8, true)
    error_message = "allowed_cidr is wider than /8 (0.0.0.0/0 opens the peers to the whole internet): narrow it, or set allow_public = true if that is what you want."
  }
}

variable "allow_public" {
  type        = bool
  description = "Accept an allowed_cidr wider than /8, such as 0.0.0.0/0: REST, gRPC and Prometheus open to the internet."
  default     = false
}

variable "repo_url" {
  type        = string
  description = "HTTPS URL of the peerfind repository; every host clones it at git_ref for the compose files (and the sources, in build mode). Must be readable without credentials."

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)+/?$", var.repo_url))
    error_message = "repo_url must be an https:// URL made of letters, digits and . _ ~ - only, such as https://github.com/acme/peerfind.git."
  }
}

variable "git_ref" {
  type        = string
  description = "Branch, tag or full commit id of repo_url every host checks out. A tag or commit id pins what runs."
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$", var.git_ref)) && !strcontains(var.git_ref, "..")
    error_message = "git_ref must be a branch, tag or commit id: letters, digits and . _ / - (not starting with - or ., no ..)."
  }
}

variable "image_source" {
  type        = string
  description = "How hosts get the images: \"build\" builds them from git_ref on each host (docker compose build); \"pull\" pulls them from image_registry_prefix."
  default     = "build"

  validation {
    condition     = contains(["build", "pull"], var.image_source)
    error_message = "image_source must be \"build\" or \"pull\"."
  }
}

variable "image_registry_prefix" {
  type        = string
  description = "With image_source = \"pull\": the registry prefix of the images (PEERFIND_IMAGE_PREFIX), e.g. ghcr.io/acme/peerfind for ghcr.io/acme/peerfind/directory:<image_version>. Must be pullable without credentials. Ignored when building."
  default     = ""

  validation {
    condition     = var.image_registry_prefix == "" || can(regex("^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$", var.image_registry_prefix))
    error_message = "image_registry_prefix must be a registry/namespace path in lower case, such as ghcr.io/acme/peerfind."
  }

  validation {
    condition     = var.image_source != "pull" || var.image_registry_prefix != ""
    error_message = "image_source = \"pull\" needs image_registry_prefix (where to pull from)."
  }
}

variable "image_version" {
  type        = string
  description = "Tag of every image (PEERFIND_VERSION), built or pulled."
  default     = "0.1.0"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_version)) && var.image_version != "latest"
    error_message = "image_version must be an image tag (letters, digits, _ . -), and not \"latest\"."
  }
}

variable "seed_sample_files" {
  type        = bool
  description = "Copy the repository's deploy/samples/peerN into peerN's shared folder (/srv/peerfind/shared), so searches find something right away."
  default     = true
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days the VPC flow logs (CloudWatch Logs) are kept."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch Logs retention: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags on every resource (Project, Deployment and ManagedBy are always set)."
  default     = {}

  validation {
    condition = alltrue([
      for key, value in var.tags :
      length(key) >= 1 && length(key) <= 128 && length(value) <= 256 && !startswith(lower(key), "aws:")
    ])
    error_message = "tags: keys 1-128 characters not starting with aws:, values at most 256 characters."
  }
}
