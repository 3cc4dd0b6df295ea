# The peer hosts: one EC2 instance per peer, reached through SSM Session Manager (no SSH
# key, no port 22), set up by the cloud-init that modules/peers renders for it.

data "aws_iam_policy_document" "peer_assume" {
  statement {
    sid     = "Ec2Service"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# The hosts need AWS for one thing: Session Manager. The services never call AWS (and
# cannot reach the instance metadata service: hop limit 1).
resource "aws_iam_role" "peer" {
  name               = "${var.name}-peer"
  description        = "peerfind peer hosts: SSM Session Manager only."
  assume_role_policy = data.aws_iam_policy_document.peer_assume.json
}

resource "aws_iam_role_policy_attachment" "peer_ssm" {
  role       = aws_iam_role.peer.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "peer" {
  name = "${var.name}-peer"
  role = aws_iam_role.peer.name
}

resource "aws_instance" "peer" {
  #checkov:skip=CKV_AWS_88: the peers serve users on the internet (REST, gRPC, Prometheus, restricted to allowed_cidr by the security group), so each needs a public address
  for_each = module.peers.peers

  ami                    = data.aws_ami.ubuntu.id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.public.id
  private_ip             = each.value.private_ip
  vpc_security_group_ids = [aws_security_group.peer.id]
  iam_instance_profile   = aws_iam_instance_profile.peer.name
  monitoring             = true
  ebs_optimized          = true
  # Read again at every start by the host (it changes when the instance stops).
  associate_public_ip_address = true

  user_data = module.peers.user_data[each.key]
  # cloud-init runs once: a changed config means a new host (at the same private address).
  user_data_replace_on_change = true

  # IMDSv2 only. Hop limit 1 keeps the containers (bridge network: one hop more) away
  # from the metadata service; only the host's cloud-init and peerfind-host read it.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
  }

  tags = {
    Name = "${var.name}-${each.key}"
    Peer = each.key
  }

  lifecycle {
    # A newer Ubuntu image must not replace running peers; `terraform apply -replace`
    # moves one peer to it deliberately.
    ignore_changes = [ami]
  }

  # cloud-init needs the internet at first boot: the route must exist before the host.
  depends_on = [aws_route.internet, aws_route_table_association.public]
}
