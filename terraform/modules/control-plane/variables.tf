variable "name" {
  description = "Prefix of every Kubernetes object of this control plane (a DNS label)."
  type        = string
  default     = "starling-cp"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,28}[a-z0-9])?$", var.name))
    error_message = "The name must be a DNS label of at most 30 characters (objects get suffixes)."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the control plane."
  type        = string
  default     = "starling-control-plane"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "The namespace must be a DNS label."
  }
}

variable "create_namespace" {
  description = "Create the namespace (false: it exists already)."
  type        = bool
  default     = true
}

variable "image" {
  description = "The Starling image (see the repository's Dockerfile), ideally pinned by digest: registry/starling@sha256:…"
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "Give an image with an explicit tag or digest (name:tag or name@sha256:…), never an implicit :latest."
  }
}

variable "replicas" {
  description = "Control-plane processes. More than one needs Redis (redis_enabled) so idempotency keys are shared."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 20 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number from 1 to 20."
  }
}

variable "resources" {
  description = "CPU and memory requests and limits of one control-plane container."
  type = object({
    cpu_request    = optional(string, "100m")
    memory_request = optional(string, "128Mi")
    memory_limit   = optional(string, "512Mi")
  })
  default = {}
}

variable "operator_token" {
  description = "Bearer token of the admin API, 32+ characters. Ignored when existing_auth_secret is set. Kept in a Kubernetes Secret (and so in Terraform state: protect the state); never an output."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.operator_token == null || length(coalesce(var.operator_token, "x")) >= 32
    error_message = "operator_token must be at least 32 characters."
  }
}

variable "key_hash_secret" {
  description = "HMAC key API-key hashes are made with, 32+ characters; every cell needs the same one. Changing it invalidates every API key. Ignored when existing_auth_secret is set; never an output."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.key_hash_secret == null || length(coalesce(var.key_hash_secret, "x")) >= 32
    error_message = "key_hash_secret must be at least 32 characters."
  }
}

variable "control_plane_signing_key" {
  description = "The control plane's Ed25519 signing key (`starling keygen`): it signs every call to a cell's internal API (console moderation) and the app-config feed; cells get its public key. Ignored when existing_auth_secret is set (key `control-plane-signing-key`); never an output."
  type        = string
  default     = null
  sensitive   = true
}

variable "existing_auth_secret" {
  description = "Name of an existing Secret in the namespace with keys `operator-token`, `key-hash-secret` and `control-plane-signing-key` (e.g. synced from a secret manager), so the secrets never pass through Terraform. Null: the module makes one from operator_token, key_hash_secret and control_plane_signing_key."
  type        = string
  default     = null

  validation {
    condition     = var.existing_auth_secret == null || can(regex("^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$", coalesce(var.existing_auth_secret, "x")))
    error_message = "existing_auth_secret must be a Kubernetes object name."
  }
}

variable "postgres" {
  description = "The control plane's PostgreSQL, a CloudNativePG cluster (the operator must run in the Kubernetes cluster: modules/postgres-operator). backup_secret names a Secret with ACCESS_KEY_ID and ACCESS_SECRET_KEY for the S3-compatible bucket; null backup_destination: no backups (not for production)."
  type = object({
    chart_version      = optional(string, "0.3.1")
    instances          = optional(number, 3)
    storage_size       = optional(string, "20Gi")
    storage_class      = optional(string, "")
    backup_destination = optional(string)
    backup_endpoint    = optional(string, "")
    backup_secret      = optional(string)
    backup_retention   = optional(string, "30d")
    backup_schedule    = optional(string, "0 0 3 * * *")
  })
  default = {}

  validation {
    condition     = var.postgres.instances >= 1 && var.postgres.instances <= 9
    error_message = "postgres.instances must be 1 to 9 (1 primary + replicas)."
  }

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi|Ti)$", var.postgres.storage_size))
    error_message = "postgres.storage_size must look like 20Gi."
  }

  validation {
    condition     = var.postgres.backup_destination == null || can(regex("^(s3|gs)://[^\\s]+$|^https://[^\\s]+$", coalesce(var.postgres.backup_destination, "x")))
    error_message = "postgres.backup_destination must be an s3://, gs:// or https:// (Azure) URL."
  }

  validation {
    condition     = (var.postgres.backup_destination == null) == (var.postgres.backup_secret == null)
    error_message = "Set postgres.backup_destination and postgres.backup_secret together."
  }
}

variable "external_database_secret" {
  description = "Use an existing PostgreSQL instead of deploying one: a Secret in the namespace and the key holding a postgres:// URL. Null: the module deploys a CloudNativePG cluster."
  type = object({
    name = string
    key  = string
  })
  default = null
}

variable "database_max_connections" {
  description = "Pooled PostgreSQL connections per control-plane process (STARLING_DATABASE__MAX_CONNECTIONS)."
  type        = number
  default     = 20

  validation {
    condition     = var.database_max_connections >= 1 && var.database_max_connections <= 500
    error_message = "database_max_connections must be 1 to 500."
  }
}

variable "redis_enabled" {
  description = "Deploy a Redis for idempotency keys shared by the replicas (STARLING_CACHE__REDIS_URL). Needed when replicas > 1."
  type        = bool
  default     = true
}

variable "redis_password" {
  description = "Password of that Redis (24+ URL-safe characters). Null: no password, NetworkPolicy only. Never an output."
  type        = string
  default     = null
  sensitive   = true
}

variable "pulsar_url" {
  description = "pulsar:// URL the app-configuration feed is published on (STARLING_PULSAR__URL): a cell's Pulsar reachable from here. Null: no feed (cells learn nothing; only for a control plane without cells)."
  type        = string
  default     = null

  validation {
    condition     = var.pulsar_url == null || can(regex("^pulsar(\\+ssl)?://[^\\s/]+:[0-9]+$", coalesce(var.pulsar_url, "x")))
    error_message = "pulsar_url must look like pulsar://host:6650 or pulsar+ssl://host:6651."
  }
}

variable "pulsar_admin_url" {
  description = "Admin REST API of that Pulsar (STARLING_PULSAR__ADMIN_URL, http://host:8080): the control plane then creates the namespace of pulsar_topic_prefix and gives the feed topic its policies at start. Null: they must exist already."
  type        = string
  default     = null

  validation {
    condition     = var.pulsar_admin_url == null || can(regex("^https?://[^\\s]+$", coalesce(var.pulsar_admin_url, "x")))
    error_message = "pulsar_admin_url must be an http:// or https:// URL."
  }
}

variable "pulsar_compaction_threshold_bytes" {
  description = "Backlog at which the broker compacts the app-config topic (STARLING_PULSAR__COMPACTION_THRESHOLD_BYTES); applied with pulsar_admin_url."
  type        = number
  default     = 1048576

  validation {
    condition     = var.pulsar_compaction_threshold_bytes >= 1024
    error_message = "pulsar_compaction_threshold_bytes must be at least 1024."
  }
}

variable "pulsar_topic_prefix" {
  description = "Prefix of Starling's topics (STARLING_PULSAR__TOPIC_PREFIX); the same in the control plane and in every cell."
  type        = string
  default     = "persistent://starling/default/starling-"

  validation {
    condition     = can(regex("^persistent://[a-zA-Z0-9_.-]+/[a-zA-Z0-9_.-]+/[a-zA-Z0-9_.-]*$", var.pulsar_topic_prefix))
    error_message = "pulsar_topic_prefix must look like persistent://tenant/namespace/prefix-."
  }
}

variable "log_filter" {
  description = "Log filter in RUST_LOG syntax (STARLING_TELEMETRY__LOG_FILTER)."
  type        = string
  default     = "info,sqlx=warn,sea_orm=warn"
}

variable "otlp_endpoint" {
  description = "OTLP/HTTP endpoint traces are exported to (STARLING_TELEMETRY__OTLP_ENDPOINT). Null: no export."
  type        = string
  default     = null

  validation {
    condition     = var.otlp_endpoint == null || can(regex("^https?://", coalesce(var.otlp_endpoint, "x")))
    error_message = "otlp_endpoint must be an http:// or https:// URL."
  }
}

variable "service_type" {
  description = "Type of the admin API's Service. The admin API is for operators: keep it ClusterIP behind a VPN or an authenticated ingress unless you know better."
  type        = string
  default     = "ClusterIP"

  validation {
    condition     = contains(["ClusterIP", "LoadBalancer", "NodePort"], var.service_type)
    error_message = "service_type must be ClusterIP, LoadBalancer or NodePort."
  }
}

variable "service_annotations" {
  description = "Annotations of the admin API's Service (e.g. a cloud's internal load balancer)."
  type        = map(string)
  default     = {}
}
