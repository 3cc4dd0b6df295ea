output "subnet_cidr" {
  description = "CIDR of the public subnet the peers live in (the second /24 of the VPC)."
  value       = local.subnet_cidr
}

output "ports" {
  description = "Ports of every peer host: rest, grpc and prometheus are published; transfer_metrics and indexer_metrics stay inside the host."
  value       = local.ports
}

output "peers" {
  description = "Per peer id (peer1, peer2, ...): number, private_ip, self_url, grpc_private, friend_primary, friend_backup."
  value       = local.peers
}

output "configs" {
  description = "Per peer id: the peer's JSON config as an object (holds the cluster token)."
  value       = local.configs
  sensitive   = true
}

output "user_data" {
  description = "Per peer id: the rendered cloud-config of its host (holds the cluster token)."
  value       = local.user_data
  sensitive   = true
}
