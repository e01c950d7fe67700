variable "password" {
  type      = string
  sensitive = true
  default   = "x"
  validation {
    condition     = length(var.password) > 0
    error_message = "empty"
  }
}

locals {
  names  = [for i in range(3) : format("web-%02d", i)]
  joined = join(",", local.names)
  obj    = { a = 1, b = [true, null, 1.5e3], c = "${upper("x")}-${lower("Y")}" }
  cond   = local.obj.a > 0 ? base64encode(local.joined) : sha256("z")
  split  = split(",", local.joined)[1]
  merged = merge(local.obj, { d = coalesce("", "e") })
}

resource "docker_network" "net" {
  name = "n-${berth.env}-${local.split}"
  labels {
    label = "h"
    value = sha256(var.password)
  }
}

output "cond" {
  value = local.cond
}
