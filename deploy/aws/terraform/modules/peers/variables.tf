# Inputs of the peers module. The root module (../../variables.tf) validates what users
# type; these validations repeat the few that keep the rendered files well formed, so
# the module is safe to call on its own.

variable "peer_count" {
  type        = number
  description = "How many peers (one host each). Peer N is named peerN."

  validation {
    condition     = var.peer_count >= 1 && var.peer_count <= 50 && floor(var.peer_count) == var.peer_count
    error_message = "peer_count must be a whole number from 1 to 50."
  }
}

variable "vpc_cidr" {
  type        = string
  description = "IPv4 CIDR of the VPC; the peers' subnet is its second /24."

  validation {
    condition = (
      can(cidrhost(var.vpc_cidr, 0)) &&
      can(regex("^[0-9.]+/(1[6-9]|2[0-3])$", var.vpc_cidr)) &&
      try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false)
    )
    error_message = "vpc_cidr must be a network address with a prefix from /16 to /23, such as 10.42.0.0/16."
  }
}

variable "cluster_token" {
  type        = string
  description = "Shared secret every peer presents to the others (cluster_token of the peer config); empty turns it off."
  sensitive   = true

  validation {
    condition     = var.cluster_token == "" || can(regex("^[A-Za-z0-9]{32,128}$", var.cluster_token))
    error_message = "cluster_token must be empty or 32-128 letters and digits."
  }
}

variable "repo_url" {
  type        = string
  description = "HTTPS URL of the peerfind repository each host clones (compose files; sources in build mode)."

  validation {
    condition     = can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)+/?$", var.repo_url))
    error_message = "repo_url must be an https:// URL made of letters, digits and . _ ~ - only."
  }
}

variable "git_ref" {
  type        = string
  description = "Branch, tag or full commit id of repo_url that each host checks out."

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$", var.git_ref)) && !strcontains(var.git_ref, "..")
    error_message = "git_ref must be a branch, tag or commit id: letters, digits and . _ / - (not starting with - or ., no ..)."
  }
}

variable "image_source" {
  type        = string
  description = "build: each host builds the images from git_ref; pull: each host pulls them from image_registry_prefix."

  validation {
    condition     = contains(["build", "pull"], var.image_source)
    error_message = "image_source must be \"build\" or \"pull\"."
  }
}

variable "image_registry_prefix" {
  type        = string
  description = "Registry prefix of the images (PEERFIND_IMAGE_PREFIX), e.g. ghcr.io/acme/peerfind; \"peerfind\" for locally built images."

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$", var.image_registry_prefix))
    error_message = "image_registry_prefix must be a registry/namespace path in lower case, such as ghcr.io/acme/peerfind."
  }
}

variable "image_version" {
  type        = string
  description = "Image tag of every service (PEERFIND_VERSION)."

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_version)) && var.image_version != "latest"
    error_message = "image_version must be a tag (letters, digits, _ . -), and not \"latest\"."
  }
}

variable "seed_sample_files" {
  type        = bool
  description = "Copy deploy/samples/peerN of the repository into the shared folder of peerN at install."
}
