# A container on a DigitalOcean droplet, from nothing: an SSH key, a droplet
# with Docker preinstalled, a firewall that opens SSH and the app's port, the
# app's container deployed onto the droplet over SSH, and a smoke test.
# See README.md beside this file.

variable "app_image" {
  type        = string
  description = "The image to run, e.g. registry.gitlab.com/acme/shop:1.4.2 (it must answer GET /api/ping on port 5000)."
}

variable "region" {
  type    = string
  default = "fra1"
}

variable "size" {
  type    = string
  default = "s-1vcpu-1gb"
}

variable "droplet_image" {
  type        = string
  default     = "docker-20-04"
  description = "A droplet image with Docker installed: the Marketplace's Docker image (doctl compute image list --public)."
}

variable "api_endpoint" {
  type        = string
  default     = "https://api.digitalocean.com"
  description = "The DigitalOcean API; point it at a test double to try the example offline."
}

provider "digitalocean" {
  # The token comes from DIGITALOCEAN_TOKEN (or DIGITALOCEAN_ACCESS_TOKEN).
  api_endpoint = var.api_endpoint
}

resource "digitalocean_ssh_key" "deploy" {
  name       = "deploy-${berth.env}"
  public_key = env("SSH_PUBLIC_KEY")
}

resource "digitalocean_droplet" "web" {
  name     = "web-${berth.env}"
  region   = var.region
  size     = var.size
  image    = var.droplet_image
  ssh_keys = [digitalocean_ssh_key.deploy.fingerprint]
  tags     = ["web"]
}

resource "digitalocean_firewall" "web" {
  name        = "web-${berth.env}"
  droplet_ids = [digitalocean_droplet.web.id]

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }

  inbound_rule {
    protocol         = "tcp"
    port_range       = "5000"
    source_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "tcp"
    port_range            = "all"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "all"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

resource "docker_container" "app" {
  # Docker on the droplet, reached over SSH as soon as the droplet has its
  # address (the container waits for the droplet in the same apply).
  host {
    address     = digitalocean_droplet.web.ipv4_address
    user        = "root"
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

  depends_on = [digitalocean_firewall.web]
}

check "ping" {
  url     = "http://${digitalocean_droplet.web.ipv4_address}:5000/api/ping"
  timeout = "120s"
  retries = 20
}

output "url" {
  value = "http://${digitalocean_droplet.web.ipv4_address}:5000"
}
