# The embedded default: build the demo app and run two replicas of it behind
# a load balancer on the local Docker engine.
# `berth apply`, then `curl $(berth output -raw url)/api/ping`.

variable "port" {
  type        = number
  default     = 8080
  description = "Host port of the load balancer in front of the replicas."
}

locals {
  app = "berth-demo-${berth.env}"
}

resource "docker_network" "app" {
  name = local.app
}

resource "docker_image" "app" {
  name = "${local.app}:latest"
  build {
    context = "app"
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
    ip       = "127.0.0.1"
  }

  networks_advanced {
    name = docker_network.app.name
  }

  # berth's own proxy (image berth-proxy:<berth version>, built by
  # scripts/build-proxy-image.sh): replicas change without dropping a
  # connection. `kind = "nginx"` is the alternative.
  load_balancer {
    kind = "berth-proxy"
  }

  healthcheck {
    test     = ["CMD", "/demo-app", "healthcheck"]
    interval = "2s"
    timeout  = "2s"
    retries  = 5
  }
  wait = true
}

output "url" {
  value = "http://127.0.0.1:${var.port}"
}
