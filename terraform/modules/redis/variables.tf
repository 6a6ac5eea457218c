variable "name" {
  description = "Name of the Redis Deployment and Service (a DNS label)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.name))
    error_message = "The name must be a DNS label of at most 40 characters: lower-case letters, digits and '-'."
  }
}

variable "namespace" {
  description = "Kubernetes namespace to deploy into (must exist)."
  type        = string
}

variable "image" {
  description = "Redis container image. Starling uses plain Redis commands and Lua scripts (Redis 6.2 or later)."
  type        = string
  default     = "redis:7.4-alpine"

  validation {
    condition     = length(var.image) > 0 && !can(regex("\\s", var.image))
    error_message = "The image must be a non-empty image reference without spaces."
  }
}

variable "password" {
  description = "Password Redis requires (AUTH). Null: no password, and only the pods matching client_pod_labels may connect (NetworkPolicy)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.password == null || can(regex("^[A-Za-z0-9._~-]{24,}$", var.password))
    error_message = "The password must be at least 24 characters of A-Z, a-z, 0-9, '.', '_', '~', '-' (it goes into a URL unescaped)."
  }
}

variable "max_memory" {
  description = "Redis maxmemory, e.g. \"512mb\". Starling's Redis state (presence, routing, rate limits) is rebuilt by the gateways, so eviction loses nothing durable."
  type        = string
  default     = "512mb"

  validation {
    condition     = can(regex("^[0-9]+(kb|mb|gb)$", var.max_memory))
    error_message = "max_memory must look like 512mb or 2gb."
  }
}

variable "resources" {
  description = "CPU and memory requests and limits of the Redis container."
  type = object({
    cpu_request    = optional(string, "100m")
    memory_request = optional(string, "256Mi")
    memory_limit   = optional(string, "768Mi")
  })
  default = {}
}

variable "client_pod_labels" {
  description = "Labels of the pods allowed to connect (NetworkPolicy ingress rule)."
  type        = map(string)

  validation {
    condition     = length(var.client_pod_labels) > 0
    error_message = "Give at least one label: an empty selector would let every pod in the namespace connect."
  }
}
