# A GitLab pipeline's whole setup in one file: the project's CI/CD
# variables, the app image built and pushed to a container registry, and
# the app deployed by the digest that was pushed.
#
# See README.md for the command that checks it (`berth validate`) and for
# what each piece does.

variable "gitlab_project" {
  type        = string
  description = "The project the CI/CD variables belong to (path or numeric id)."
}

variable "registry" {
  type        = string
  default     = "registry.gitlab.com"
  description = "The container registry the image is pushed to."
}

variable "image_repository" {
  type        = string
  description = "The repository in the registry, e.g. group/project/app."
}

variable "image_tag" {
  type    = string
  default = "v1"
}

variable "registry_user" {
  type = string
}

variable "registry_password" {
  type      = string
  sensitive = true
}

variable "ssh_key_file" {
  type        = string
  description = "The deploy key jobs use, stored as a file variable."
}

provider "gitlab" {
  # base_url and token come from GITLAB_BASE_URL / CI_API_V4_URL and
  # GITLAB_TOKEN (see the README).
}

provider "docker" {
  registry_auth {
    address  = var.registry
    username = var.registry_user
    password = var.registry_password
  }
}

# --- CI/CD variables --------------------------------------------------------

resource "gitlab_project_variable" "registry_user" {
  project = var.gitlab_project
  key     = "REGISTRY_USER"
  value   = var.registry_user
}

resource "gitlab_project_variable" "registry_pass" {
  project   = var.gitlab_project
  key       = "REGISTRY_PASS"
  value     = var.registry_password
  masked    = true
  protected = true
}

resource "gitlab_project_variable" "ssh_key" {
  project       = var.gitlab_project
  key           = "SSH_KEY"
  value         = file(var.ssh_key_file)
  variable_type = "file"
  protected     = true
}

# --- Build, push, deploy ------------------------------------------------------

resource "docker_image" "app" {
  name = "${var.registry}/${var.image_repository}:${var.image_tag}"
  build {
    context = "../local/app"
  }
}

resource "docker_registry_image" "app" {
  # Referring to the docker_image orders the build before the push.
  name = docker_image.app.name
}

resource "docker_container" "web" {
  name = "app-${replace(berth.env, "/", "-")}-web"
  # The digest that was pushed: exactly that image runs, wherever it runs.
  image   = "${docker_registry_image.app.name}@${docker_registry_image.app.sha256_digest}"
  restart = "unless-stopped"
  env     = ["APP_ENV=${berth.env}"]
}

output "image_digest" {
  value = docker_registry_image.app.sha256_digest
}
