# No provider: this module only computes (addresses, friend wiring, peer configs,
# cloud-init), so tests/terraform evaluates it with a real Terraform and no download.
terraform {
  required_version = ">= 1.9.0"
}
