# What `terraform output` prints: every peer's addresses and commands to paste. Public
# addresses change when an instance is stopped and started: `terraform apply
# -refresh-only` updates these outputs (the hosts re-advertise by themselves).

locals {
  endpoints = {
    for id, instance in aws_instance.peer : id => {
      number         = module.peers.peers[id].number
      instance_id    = instance.id
      private_ip     = instance.private_ip
      public_ip      = instance.public_ip
      rest_url       = "http://${instance.public_ip}:${module.peers.ports.rest}"
      grpc_address   = "${instance.public_ip}:${module.peers.ports.grpc}"
      prometheus_url = "http://${instance.public_ip}:${module.peers.ports.prometheus}"
      friends        = compact([module.peers.peers[id].friend_primary, module.peers.peers[id].friend_backup])
      # deploy/samples/peerN/helloN.txt, when the host copied it into its shared folder.
      sample_file = (
        var.seed_sample_files && fileexists("${path.module}/../../samples/${id}/hello${module.peers.peers[id].number}.txt")
        ? "hello${module.peers.peers[id].number}.txt" : ""
      )
    }
  }

  curl_commands = {
    for id, e in local.endpoints : id => [
      "curl -s ${e.rest_url}/health",
      "curl -s ${e.rest_url}/peers",
      "curl -s ${e.rest_url}/files",
      "curl -s '${e.rest_url}/search?query=.txt&fanout=2'",
      "curl -s '${e.prometheus_url}/api/v1/query?query=up'",
    ]
  }

  # Peer ids in number order (a map iterates peer1, peer10, peer2, ...).
  peer_order = [for n in range(1, var.peer_count + 1) : "peer${n}"]

  # The sample file of the farthest peer that has one: a search from peer1 floods to it.
  cli_download = try(reverse([for id in local.peer_order : local.endpoints[id].sample_file if local.endpoints[id].sample_file != ""])[0], "")

  peerfind_cli = concat(
    ["peerfind search hello --peer ${local.endpoints["peer1"].rest_url}"],
    local.cli_download == "" ? [] : ["peerfind download ${local.cli_download} --peer ${local.endpoints["peer1"].rest_url}"],
  )

  grpcurl_commands = {
    for id, e in local.endpoints : id => concat(
      [
        "grpcurl -plaintext ${e.grpc_address} list",
        "grpcurl -plaintext ${e.grpc_address} grpc.health.v1.Health/Check",
      ],
      e.sample_file == "" ? [] : [
        "grpcurl -plaintext -d '{\"name\": \"${e.sample_file}\"}' ${e.grpc_address} peerfind.v1.FileTransfer/DummyDownload",
      ],
    )
  }
}

output "peers" {
  description = "Per peer: instance id, private and public IP, REST URL, gRPC address, Prometheus URL and friends (private REST URLs)."
  value       = local.endpoints
}

output "rest_urls" {
  description = "Per peer: the REST (directory) URL, reachable from allowed_cidr."
  value       = { for id, e in local.endpoints : id => e.rest_url }
}

output "grpc_addresses" {
  description = "Per peer: the gRPC (transfer) address, reachable from allowed_cidr; the one each peer advertises in search results."
  value       = { for id, e in local.endpoints : id => e.grpc_address }
}

output "prometheus_urls" {
  description = "Per peer: the Prometheus of its host (scrapes that peer's three services, loads the peerfind alert rules)."
  value       = { for id, e in local.endpoints : id => e.prometheus_url }
}

output "curl_commands" {
  description = "Per peer: curl commands to paste (health, peers, files, a flooded search, Prometheus's view of the targets)."
  value       = local.curl_commands
}

output "grpcurl_commands" {
  description = "Per peer: grpcurl commands to paste (services by reflection, health, a download of the peer's sample file)."
  value       = local.grpcurl_commands
}

output "peerfind_cli" {
  description = "The peerfind CLI (.venv/bin/peerfind) against peer1: a search that floods the network, then a download straight from the peer that has the file."
  value       = local.peerfind_cli
}

output "ssm_sessions" {
  description = "Per peer: a shell on its host through SSM Session Manager (AWS CLI with the session-manager-plugin). On the host: sudo peerfind-host status."
  value       = { for id, e in local.endpoints : id => "aws ssm start-session --region ${var.region} --target ${e.instance_id}" }
}

output "try_it" {
  description = "Every command above as one block: terraform output -raw try_it."
  value = join("\n", concat(
    ["# peerfind on AWS: ${var.peer_count} peers in ${var.region}; cloud-init takes a few minutes after apply (see README.md)."],
    flatten([
      for id in local.peer_order : concat(
        ["", "# ${id}: REST ${local.endpoints[id].rest_url}  gRPC ${local.endpoints[id].grpc_address}  Prometheus ${local.endpoints[id].prometheus_url}"],
        local.curl_commands[id],
        local.grpcurl_commands[id],
      )
    ]),
    ["", "# the peerfind CLI (make install; .venv/bin/peerfind)"],
    local.peerfind_cli,
    [""],
  ))
}

output "cluster_token" {
  description = "The cluster token every peer presents to the others (X-Peerfind-Token): needed to add a peer of your own or call /bootstrap. terraform output -raw cluster_token."
  value       = random_password.cluster_token.result
  sensitive   = true
}

output "amis" {
  description = "Per peer: the image its host runs (the newest Ubuntu 24.04 at its creation; later releases are ignored, see compute.tf)."
  value       = { for id, instance in aws_instance.peer : id => instance.ami }
}
