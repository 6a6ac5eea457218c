variable "kubeconfig_path" {
  description = "kubeconfig file holding the contexts of the three Kubernetes clusters."
  type        = string
  default     = "~/.kube/config"
}

variable "contexts" {
  description = "kubeconfig context of each Kubernetes cluster: the control plane's, and one per cell's region. Each runs in its own cluster (each gets its own CloudNativePG operator)."
  type = object({
    control = string
    eu      = string
    us      = string
  })

  validation {
    condition     = length(distinct([var.contexts.control, var.contexts.eu, var.contexts.us])) == 3
    error_message = "Give three different contexts: one Kubernetes cluster for the control plane and one per region."
  }
}

variable "regions" {
  description = "Names of the two cells' regions, as the control plane's cluster registry will show them."
  type = object({
    eu = string
    us = string
  })
  default = {
    eu = "europe-west"
    us = "us-east"
  }
}

variable "image" {
  description = "The Starling image built from the repository's Dockerfile, pushed to a registry all three clusters pull from; pin it by digest."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "Give an image with an explicit tag or digest (name:tag or name@sha256:…)."
  }
}

variable "operator_token" {
  description = "Bearer token of the admin API (32+ characters). Pass it as TF_VAR_operator_token from a secret manager; it is never an output."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.operator_token) >= 32
    error_message = "operator_token must be at least 32 characters."
  }
}

variable "key_hash_secret" {
  description = "HMAC key of API-key hashes (32+ characters), shared by the control plane and every cell. Pass it as TF_VAR_key_hash_secret; never an output."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.key_hash_secret) >= 32
    error_message = "key_hash_secret must be at least 32 characters."
  }
}

variable "public_lb_annotations" {
  description = "Annotations of each cell's public L4 load balancer, per cloud: e.g. an NLB with a TLS certificate on AWS, or a regional external passthrough load balancer on GCP."
  type = object({
    eu = optional(map(string), {})
    us = optional(map(string), {})
  })
  default = {}
}

variable "internal_lb_annotations" {
  description = "Annotations that make a load balancer internal on your cloud, for the EU cell's Pulsar proxy that the control plane publishes the app-config feed to."
  type        = map(string)
  default     = {}
}

variable "backups" {
  description = "Object-storage prefix (s3://bucket/path) for PostgreSQL backups of every plane, and the name of the Secret (same name in every namespace) with ACCESS_KEY_ID and ACCESS_SECRET_KEY. Null: no backups."
  type = object({
    destination = string
    secret      = string
  })
  default = null

  validation {
    condition     = var.backups == null || can(regex("^(s3|gs)://[^\\s]+[^/]$", try(var.backups.destination, "")))
    error_message = "backups.destination must be an s3:// or gs:// prefix without a trailing '/'."
  }
}

variable "control_plane_signing_key" {
  description = "The control plane's signing key from `starling keygen` (signs internal calls to cells and the app-config feed)."
  type        = string
  default     = null
  sensitive   = true
}

variable "control_plane_public_keys" {
  description = "The public key(s) `starling keygen` printed with the signing key; every cell trusts them."
  type        = list(string)
  default     = []
}

variable "cluster_ids" {
  description = "Each cell's cluster id (cls_…) once registered with POST /admin/v1/clusters (null before the first registration: the cell's internal API then refuses every call)."
  type = object({
    eu = optional(string)
    us = optional(string)
  })
  default = {}
}
