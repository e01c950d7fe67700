# The demo app on a Docker host reached over SSH: two replicas behind a load
# balancer, built on the host itself (the build context goes through the SSH
# connection), health-checked from the host, and checked from here once the
# apply is done. Nothing but sshd and dockerd is needed on the host, and no
# Docker engine on the machine running berth.
#
#   export SSH_KEY="$(cat ~/.ssh/id_ed25519)"
#   berth apply -var host=203.0.113.10 -var host_key=SHA256:...
#
# See README.md for how to get the host key's fingerprint.

variable "host" {
  type        = string
  description = "Address of the Docker host."
}

variable "host_key" {
  type        = string
  description = "The host's SSH key, pinned: its SHA256:... fingerprint (or a known_hosts line)."
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "ssh_user" {
  type        = string
  default     = "root"
  description = "Login user: root, or a member of the host's docker group."
}

variable "port" {
  type        = number
  default     = 8080
  description = "Port the load balancer publishes on the host."
}

variable "lb_image" {
  type        = string
  default     = "nginx:1.27-alpine"
  description = "nginx image of the load balancer, pulled on the host."
}

locals {
  app = "berth-demo-${berth.env}"
}

resource "docker_network" "app" {
  name = local.app

  host {
    address     = var.host
    port        = var.ssh_port
    user        = var.ssh_user
    private_key = env("SSH_KEY")
    host_key    = var.host_key
  }
}

resource "docker_image" "app" {
  name = "${local.app}:latest"
  build {
    context = "../local/app"
  }

  host {
    address     = var.host
    port        = var.ssh_port
    user        = var.ssh_user
    private_key = env("SSH_KEY")
    host_key    = var.host_key
  }
}

resource "docker_container" "web" {
  name     = "${local.app}-web"
  image    = docker_image.app.image_id
  replicas = 2
  restart  = "unless-stopped"
  env      = ["APP_ENV=${berth.env}"]

  ports {
    internal = 5000
    external = var.port
  }

  networks_advanced {
    name = docker_network.app.name
  }

  load_balancer {
    image = var.lb_image
  }

  # berth's own HTTP check: a GET made from the host (through the SSH
  # connection) to each new replica before it takes traffic.
  healthcheck {
    path = "/api/ping"
  }
  wait = true

  host {
    address     = var.host
    port        = var.ssh_port
    user        = var.ssh_user
    private_key = env("SSH_KEY")
    host_key    = var.host_key
  }
}

check "ping" {
  url      = "http://${var.host}:${var.port}/api/ping"
  contains = "ok"
  timeout  = "60s"
}

output "url" {
  value = "http://${var.host}:${var.port}"
}
