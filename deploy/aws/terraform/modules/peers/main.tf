# Everything about the peers that is known at plan time: their fixed private addresses,
# the friend wiring, each peer's JSON config and the cloud-init that sets up its host.
#
# The wiring is the one of deploy/compose/peers/: peer N bootstraps to peer N-1 (its
# primary friend) and, from peer3 on, keeps peer1 as its backup; peer1 is the seed and
# has no friend. Every address is an IP literal inside the VPC, so the peers run with
# `resolve_hostnames = false` and `peer_networks = [vpc_cidr]` (docs/security.md).

locals {
  # Container ports, published on the host under the same numbers (REST, gRPC and
  # Prometheus; the metrics ports stay on the host's compose network).
  ports = {
    rest             = 8000
    grpc             = 50051
    prometheus       = 9090
    transfer_metrics = 9100
    indexer_metrics  = 9200
  }

  # Paths inside the containers: the contract of deploy/compose/services.yaml.
  shared_dir = "/srv/peerfind/shared"
  state_dir  = "/var/lib/peerfind"

  # The one public subnet is the second /24 of the VPC (10.42.1.0/24 by default), and
  # peer N is its host number 10 + N (10.42.1.11, .12, ...): AWS keeps the first four.
  vpc_prefix  = tonumber(split("/", var.vpc_cidr)[1])
  subnet_cidr = cidrsubnet(var.vpc_cidr, 24 - local.vpc_prefix, 1)
  host_offset = 10

  peer_ids    = [for n in range(1, var.peer_count + 1) : "peer${n}"]
  private_ips = [for n in range(1, var.peer_count + 1) : cidrhost(local.subnet_cidr, local.host_offset + n)]
  rest_urls   = [for ip in local.private_ips : "http://${ip}:${local.ports.rest}"]

  peers = {
    for i, id in local.peer_ids : id => {
      number         = i + 1
      private_ip     = local.private_ips[i]
      self_url       = local.rest_urls[i]
      grpc_private   = "${local.private_ips[i]}:${local.ports.grpc}"
      friend_primary = i == 0 ? "" : local.rest_urls[max(i - 1, 0)]
      friend_backup  = i < 2 ? "" : local.rest_urls[0]
    }
  }

  # The peer config (libs/peerfind/src/peerfind/config.py, PeerSettings). grpc_advertise
  # is the private address here; at every start the host replaces it with its public
  # address (PEERFIND_GRPC_ADVERTISE), which can change when the instance stops.
  configs = {
    for id, p in local.peers : id => {
      peer_id               = id
      host                  = "0.0.0.0"
      rest_port             = local.ports.rest
      grpc_port             = local.ports.grpc
      self_url              = p.self_url
      grpc_advertise        = p.grpc_private
      transfer_address      = "transfer:${local.ports.grpc}"
      shared_dir            = local.shared_dir
      state_dir             = local.state_dir
      friend_primary        = p.friend_primary
      friend_backup         = p.friend_backup
      transfer_metrics_port = local.ports.transfer_metrics
      indexer_metrics_port  = local.ports.indexer_metrics
      metrics_host          = "0.0.0.0"
      log_format            = "json"
      peer_networks         = [var.vpc_cidr]
      resolve_hostnames     = false
      cluster_token         = var.cluster_token
    }
  }

  # Prometheus on each host scrapes that host's three services (file_sd targets read by
  # deploy/aws/host/prometheus.yml), labelled like deploy/compose/prometheus/prometheus.yml.
  scrape_ports = {
    directory = local.ports.rest
    transfer  = local.ports.transfer_metrics
    indexer   = local.ports.indexer_metrics
  }

  host_script  = file("${path.module}/files/peerfind-host.sh")
  systemd_unit = file("${path.module}/files/peerfind.service")

  user_data = {
    for id, p in local.peers : id => templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
      peer_id               = id
      private_ip            = p.private_ip
      peer_json             = jsonencode(local.configs[id])
      repo_url              = var.repo_url
      git_ref               = var.git_ref
      image_source          = var.image_source
      image_registry_prefix = var.image_registry_prefix
      image_version         = var.image_version
      seed_sample_files     = var.seed_sample_files
      grpc_port             = local.ports.grpc
      host_script           = local.host_script
      systemd_unit          = local.systemd_unit
      scrape_targets = {
        for service, port in local.scrape_ports : service => jsonencode([{
          targets = ["${service}:${port}"]
          labels  = { peer = id, service = service }
        }])
      }
    })
  }
}
