# A container on an EC2 instance, from nothing: a key pair, a security group
# that opens SSH and the app's port, an instance that installs Docker on
# first boot, the app's container deployed onto it over SSH, and a smoke
# test. See README.md beside this file.

variable "app_image" {
  type        = string
  description = "The image to run, e.g. registry.gitlab.com/acme/shop:1.4.2 (it must answer GET /api/ping on port 5000)."
}

variable "region" {
  type    = string
  default = "eu-central-1"
}

variable "ami" {
  type        = string
  description = "An Amazon Linux 2023 AMI of the region (aws ssm get-parameter --name /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64)."
}

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

variable "ec2_endpoint" {
  type        = string
  default     = ""
  description = "Another EC2 endpoint (moto, LocalStack); empty: AWS's own for the region."
}

provider "aws" {
  # Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN),
  # or a profile of ~/.aws/credentials (AWS_PROFILE).
  region = var.region
  endpoints {
    ec2 = var.ec2_endpoint
  }
}

resource "aws_key_pair" "deploy" {
  key_name   = "deploy-${berth.env}"
  public_key = env("SSH_PUBLIC_KEY")
}

resource "aws_security_group" "web" {
  name        = "web-${berth.env}"
  description = "SSH and the app"

  ingress {
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    from_port   = 5000
    to_port     = 5000
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "web" {
  ami                         = var.ami
  instance_type               = var.instance_type
  key_name                    = aws_key_pair.deploy.key_name
  vpc_security_group_ids      = [aws_security_group.web.id]
  associate_public_ip_address = true
  # Docker on first boot; ec2-user may use its socket (berth tunnels to it).
  user_data = <<-SCRIPT
    #!/bin/sh
    dnf install -y docker
    usermod -aG docker ec2-user
    systemctl enable --now docker
  SCRIPT
  tags = {
    Name = "web-${berth.env}"
  }
}

resource "docker_container" "app" {
  # Docker on the instance, reached over SSH once it has its public IP and
  # answers (the first boot installs Docker: give it a few minutes).
  host {
    address     = aws_instance.web.public_ip
    user        = "ec2-user"
    private_key = env("SSH_KEY")
    timeout     = "10m"
  }

  name    = "shop"
  image   = var.app_image
  restart = "always"

  ports {
    internal = 5000
    external = 5000
  }
}

check "ping" {
  url     = "http://${aws_instance.web.public_ip}:5000/api/ping"
  timeout = "180s"
  retries = 30
}

output "url" {
  value = "http://${aws_instance.web.public_ip}:5000"
}
