# The demo app, deployed by the pipeline in .gitlab-ci.yml: one replica per
# review environment, two in production. State lives in GitLab's managed
# Terraform state (the http backend fills in its address, user and token
# from CI_API_V4_URL, CI_PROJECT_ID and CI_JOB_TOKEN).

backend "http" {}

variable "name_prefix" {
  type    = string
  default = "shop"
}

locals {
  # Review environments are named review/<branch>; container names cannot
  # hold a slash.
  name       = "${var.name_prefix}-${replace(berth.env, "/", "-")}"
  production = berth.env == "production"
}

resource "docker_image" "app" {
  name = "${local.name}:latest"
  build {
    context = "app"
  }
}

resource "docker_container" "web" {
  name     = "${local.name}-web"
  image    = docker_image.app.image_id
  replicas = local.production ? 2 : 1
  restart  = "unless-stopped"
  env      = ["APP_ENV=${berth.env}"]
  healthcheck {
    test     = ["CMD", "/demo-app", "healthcheck"]
    interval = "1s"
    retries  = 30
  }
  wait = true
}

output "containers" {
  value = docker_container.web.container_ids
}
