# The peers as known at plan time: fixed private addresses, friend wiring, each peer's
# JSON config and its host's cloud-init (modules/peers has no provider, so
# tests/terraform evaluates this very call with a real Terraform, offline).
module "peers" {
  source = "./modules/peers"

  peer_count    = var.peer_count
  vpc_cidr      = var.vpc_cidr
  cluster_token = local.cluster_token

  repo_url              = var.repo_url
  git_ref               = var.git_ref
  image_source          = var.image_source
  image_registry_prefix = var.image_source == "pull" ? var.image_registry_prefix : "peerfind"
  image_version         = var.image_version
  seed_sample_files     = var.seed_sample_files
}
