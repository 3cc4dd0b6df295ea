# The network of the deployment: its own VPC (no default VPC needed), one public subnet
# holding every peer at a fixed private address, an internet gateway and its route,
# VPC flow logs, and the peers' security group.

resource "aws_vpc" "main" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.name }
}

# The VPC's default security group, emptied: nothing uses it, so nothing may pass it.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.main.id

  tags = { Name = "${var.name}-default-closed" }
}

resource "aws_internet_gateway" "main" {
  vpc_id = aws_vpc.main.id

  tags = { Name = var.name }
}

resource "aws_subnet" "public" {
  vpc_id            = aws_vpc.main.id
  cidr_block        = module.peers.subnet_cidr
  availability_zone = local.availability_zone
  # Only the peer instances get public addresses, and they ask for one explicitly.
  map_public_ip_on_launch = false

  tags = { Name = "${var.name}-public" }

  lifecycle {
    # Chosen once (main.tf, local.availability_zone): never moved by a zone AWS adds later.
    ignore_changes = [availability_zone]
  }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.main.id

  tags = { Name = "${var.name}-public" }
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.main.id
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

# ---------------------------------------------------------------- flow logs

resource "aws_cloudwatch_log_group" "flow_logs" {
  #checkov:skip=CKV_AWS_158: flow logs hold connection metadata only (addresses, ports, bytes); CloudWatch Logs encrypts them at rest with AWS-owned keys, and a customer key would outlive `terraform destroy` by its 7-30 day deletion window
  name              = "/${var.name}/vpc-flow-logs"
  retention_in_days = var.flow_log_retention_days

  tags = { Name = "${var.name}-vpc-flow-logs" }
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    sid     = "VpcFlowLogsService"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:vpc-flow-log/*"]
    }
  }
}

data "aws_iam_policy_document" "flow_logs_write" {
  statement {
    sid       = "WriteFlowLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.flow_logs.arn, "${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }

  statement {
    sid       = "FindLogGroup"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-vpc-flow-logs"
  description        = "Lets VPC flow logs of ${var.name} write to CloudWatch Logs."
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs_write.json
}

resource "aws_flow_log" "main" {
  vpc_id                   = aws_vpc.main.id
  traffic_type             = "ALL"
  log_destination_type     = "cloud-watch-logs"
  log_destination          = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn             = aws_iam_role.flow_logs.arn
  max_aggregation_interval = 60

  tags = { Name = "${var.name}-vpc" }
}

# ---------------------------------------------------------------- security group

# Least privilege: REST and gRPC between peers only from this group itself; REST, gRPC
# and Prometheus from allowed_cidr only; metrics (9100/9200) and everything else closed.
resource "aws_security_group" "peer" {
  name        = "${var.name}-peer"
  description = "peerfind peers: REST and gRPC from each other, REST, gRPC and Prometheus from allowed_cidr"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-peer" }
}

resource "aws_vpc_security_group_ingress_rule" "rest_from_peers" {
  security_group_id            = aws_security_group.peer.id
  description                  = "REST (directory) from the other peers: register, heartbeat, forwarded searches"
  ip_protocol                  = "tcp"
  from_port                    = module.peers.ports.rest
  to_port                      = module.peers.ports.rest
  referenced_security_group_id = aws_security_group.peer.id
}

resource "aws_vpc_security_group_ingress_rule" "grpc_from_peers" {
  security_group_id            = aws_security_group.peer.id
  description                  = "gRPC (transfer) from the other peers"
  ip_protocol                  = "tcp"
  from_port                    = module.peers.ports.grpc
  to_port                      = module.peers.ports.grpc
  referenced_security_group_id = aws_security_group.peer.id
}

resource "aws_vpc_security_group_ingress_rule" "rest_from_allowed" {
  security_group_id = aws_security_group.peer.id
  description       = "REST (directory) from allowed_cidr: curl, the peerfind CLI"
  ip_protocol       = "tcp"
  from_port         = module.peers.ports.rest
  to_port           = module.peers.ports.rest
  cidr_ipv4         = var.allowed_cidr
}

resource "aws_vpc_security_group_ingress_rule" "grpc_from_allowed" {
  security_group_id = aws_security_group.peer.id
  description       = "gRPC (transfer) from allowed_cidr: downloads, uploads, grpcurl"
  ip_protocol       = "tcp"
  from_port         = module.peers.ports.grpc
  to_port           = module.peers.ports.grpc
  cidr_ipv4         = var.allowed_cidr
}

resource "aws_vpc_security_group_ingress_rule" "prometheus_from_allowed" {
  security_group_id = aws_security_group.peer.id
  description       = "Prometheus UI and API of each host from allowed_cidr"
  ip_protocol       = "tcp"
  from_port         = module.peers.ports.prometheus
  to_port           = module.peers.ports.prometheus
  cidr_ipv4         = var.allowed_cidr
}

# Egress, all of it documented: the hosts call each other's REST and gRPC, and the
# internet on 443 and 80 only. DNS (the VPC resolver), NTP (Amazon Time Sync) and the
# instance metadata service are link-local or VPC services that security groups do not
# filter, so they need no rule.
resource "aws_vpc_security_group_egress_rule" "rest_to_peers" {
  security_group_id            = aws_security_group.peer.id
  description                  = "REST (directory) to the other peers: bootstrap, heartbeats, forwarded searches"
  ip_protocol                  = "tcp"
  from_port                    = module.peers.ports.rest
  to_port                      = module.peers.ports.rest
  referenced_security_group_id = aws_security_group.peer.id
}

resource "aws_vpc_security_group_egress_rule" "grpc_to_peers" {
  security_group_id            = aws_security_group.peer.id
  description                  = "gRPC (transfer) to the other peers"
  ip_protocol                  = "tcp"
  from_port                    = module.peers.ports.grpc
  to_port                      = module.peers.ports.grpc
  referenced_security_group_id = aws_security_group.peer.id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.peer.id
  description       = "HTTPS to the internet: git clone, image registries, PyPI during image builds, SSM Session Manager"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "http" {
  security_group_id = aws_security_group.peer.id
  description       = "HTTP to the internet: Ubuntu and Debian package mirrors (apt verifies their signatures)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}
