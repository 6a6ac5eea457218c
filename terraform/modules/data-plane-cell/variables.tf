variable "name" {
  description = "Name of the cell (a DNS label), e.g. \"eu-1\". Prefixes every Kubernetes object of the cell."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$", var.name))
    error_message = "The cell name must be a DNS label of at most 20 characters (objects get suffixes)."
  }
}

variable "region" {
  description = "Region the cell runs in, as the operator names it (a label on every object, and what to give the control plane when registering the cell)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.region))
    error_message = "The region must be a DNS label (lower-case letters, digits, '-')."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the cell. Null: \"starling-<name>\"."
  type        = string
  default     = null

  validation {
    condition     = var.namespace == null || can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", coalesce(var.namespace, "x")))
    error_message = "The namespace must be a DNS label."
  }
}

variable "create_namespace" {
  description = "Create the namespace (false: it exists already)."
  type        = bool
  default     = true
}

variable "image" {
  description = "The Starling image (see the repository's Dockerfile), the same version as the control plane's; ideally pinned by digest."
  type        = string

  validation {
    condition     = can(regex("^[^\\s]+(:[A-Za-z0-9_.-]+|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "Give an image with an explicit tag or digest (name:tag or name@sha256:…), never an implicit :latest."
  }
}

variable "cluster_id" {
  description = "The id (cls_…) the control plane gave this cell when the operator registered it (POST /admin/v1/clusters). Nodes read only this cell's app-config feed and accept only updates signed for it."
  type        = string

  validation {
    condition     = can(regex("^cls_[0-9A-Za-z]{26}$", var.cluster_id))
    error_message = "cluster_id must be a cluster id (cls_ followed by 26 characters)."
  }
}

variable "control_plane_public_keys" {
  description = "The control plane's public signing key(s) (`starling keygen` prints one); two while the control plane's key is rotated. Public: not a secret."
  type        = list(string)

  validation {
    condition     = length(var.control_plane_public_keys) > 0 && alltrue([for k in var.control_plane_public_keys : can(regex("^[A-Za-z0-9_-]{43}$", k))])
    error_message = "control_plane_public_keys must list at least one 43-character public key as `starling keygen` prints it."
  }
}

variable "key_hash_secret" {
  description = "The control plane's key_hash_secret (gateways check API keys with it). Ignored when existing_auth_secret is set; never an output."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.key_hash_secret == null || length(coalesce(var.key_hash_secret, "x")) >= 32
    error_message = "key_hash_secret must be at least 32 characters."
  }
}

variable "existing_auth_secret" {
  description = "Name of an existing Secret in the namespace with the key `key-hash-secret` (and `cell-credential` when control_plane_url is set), so the secrets never pass through Terraform. Null: the module makes one from key_hash_secret and cell_credential."
  type        = string
  default     = null
}

variable "cell_credential" {
  description = "The cell's credential for the control plane (scc_<id>.<secret>, from POST /admin/v1/clusters/{id}/credentials), required with control_plane_url. Ignored when existing_auth_secret is set; never an output."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.cell_credential == null || can(regex("^scc_[0-7][0-9a-hjkmnp-tv-z]{25}[.][A-Za-z0-9_-]{43}$", coalesce(var.cell_credential, "x")))
    error_message = "cell_credential must be scc_<id>.<secret> as the control plane issued it."
  }
}

variable "config_keys" {
  description = "The cell's config keys: X25519 secret keys (`starling keygen --cell`), the new one and the old one during a rotation. Register the public half as the cluster's config_public_key (POST/PATCH /admin/v1/clusters) after the nodes have the secret: every app-config update for the cell, secrets included, then crosses the bus sealed to it. Empty: updates travel in clear (signed). Ignored when existing_auth_secret is set; never an output."
  type        = list(string)
  default     = []
  sensitive   = true

  validation {
    condition     = alltrue([for k in var.config_keys : can(regex("^[A-Za-z0-9_-]{43}$", k))])
    error_message = "Each config key must be 32 bytes in unpadded base64url, as `starling keygen --cell` prints it."
  }
}

variable "config_keys_in_existing_secret" {
  description = "existing_auth_secret also holds `config-keys` (a JSON list of the cell's config keys): the nodes get them as gateway.config_keys."
  type        = bool
  default     = false
}

variable "internal_port" {
  description = "Port of the nodes' internal API (server.internal_listen), served by a ClusterIP Service only (never a load balancer): the control plane's moderation calls reach the cell there."
  type        = number
  default     = 7401
}

variable "gateway" {
  description = "The gateway nodes (`starling data-plane`): autoscaling bounds and target, resources, disruption budget, and gateway.* settings (docs/CONFIGURATION.md). docs/OPERATIONS.md sizes them from docs/SCALING.md."
  type = object({
    min_replicas               = optional(number, 3)
    max_replicas               = optional(number, 30)
    cpu_target_percent         = optional(number, 60)
    connections_per_pod_target = optional(number)
    cpu_request                = optional(string, "500m")
    memory_request             = optional(string, "1Gi")
    memory_limit               = optional(string, "4Gi")
    max_unavailable            = optional(string, "1")
    termination_grace_seconds  = optional(number, 60)
    heartbeat_secs             = optional(number, 25)
    registry_ttl_secs          = optional(number, 30)
    max_connections_per_user   = optional(number, 10)
    max_frame_bytes            = optional(number, 65536)
    outbound_queue             = optional(number, 256)
    write_delay_ms             = optional(number, 0)
  })
  default = {}

  validation {
    condition     = var.gateway.min_replicas >= 1 && var.gateway.min_replicas <= var.gateway.max_replicas && var.gateway.max_replicas <= 1000
    error_message = "gateway.min_replicas must be at least 1 and at most gateway.max_replicas (at most 1000)."
  }

  validation {
    condition     = var.gateway.cpu_target_percent >= 10 && var.gateway.cpu_target_percent <= 95
    error_message = "gateway.cpu_target_percent must be 10 to 95."
  }

  validation {
    condition     = var.gateway.connections_per_pod_target == null || coalesce(var.gateway.connections_per_pod_target, 1) >= 100
    error_message = "gateway.connections_per_pod_target must be at least 100 (it needs a custom-metrics adapter serving starling_ws_connections)."
  }

  validation {
    condition     = can(regex("^([0-9]+|[0-9]{1,2}%)$", var.gateway.max_unavailable))
    error_message = "gateway.max_unavailable must be a count (\"1\") or a percentage (\"10%\")."
  }

  validation {
    condition     = var.gateway.termination_grace_seconds >= 10 && var.gateway.termination_grace_seconds <= 600
    error_message = "gateway.termination_grace_seconds must be 10 to 600."
  }

  validation {
    condition     = var.gateway.heartbeat_secs >= 1 && var.gateway.heartbeat_secs <= 3600 && var.gateway.registry_ttl_secs >= 3 && var.gateway.registry_ttl_secs <= 3600
    error_message = "gateway.heartbeat_secs must be 1 to 3600 and gateway.registry_ttl_secs 3 to 3600 (the binary's limits)."
  }

  validation {
    condition     = var.gateway.max_frame_bytes >= 1024 && var.gateway.max_frame_bytes <= 16777216 && var.gateway.outbound_queue >= 8 && var.gateway.outbound_queue <= 65536 && var.gateway.max_connections_per_user >= 1 && var.gateway.write_delay_ms >= 0 && var.gateway.write_delay_ms <= 1000
    error_message = "gateway.max_frame_bytes must be 1024 to 16777216, gateway.outbound_queue 8 to 65536, gateway.max_connections_per_user at least 1, gateway.write_delay_ms 0 to 1000 (the binary's limits)."
  }
}

variable "load_balancer" {
  description = "The cell's public L4 load balancer (WebSocket gateway and server REST API on one port). TLS: terminate it on the load balancer through the cloud's annotations (the gateway speaks plain HTTP/WebSocket), or put a TLS-passthrough proxy in front."
  type = object({
    port                    = optional(number, 443)
    annotations             = optional(map(string), {})
    source_ranges           = optional(list(string), [])
    external_traffic_policy = optional(string, "Local")
  })
  default = {}

  validation {
    condition     = var.load_balancer.port >= 1 && var.load_balancer.port <= 65535
    error_message = "load_balancer.port must be a TCP port."
  }

  validation {
    condition     = contains(["Local", "Cluster"], var.load_balancer.external_traffic_policy)
    error_message = "load_balancer.external_traffic_policy must be Local (keeps client addresses, no second hop) or Cluster."
  }

  validation {
    condition     = alltrue([for r in var.load_balancer.source_ranges : can(cidrhost(r, 0))])
    error_message = "load_balancer.source_ranges must be CIDR blocks."
  }
}

variable "postgres" {
  description = "The cell's PostgreSQL (messages, conversations, outbox), a CloudNativePG cluster (the operator must run in the Kubernetes cluster: modules/postgres-operator). backup_secret names a Secret with ACCESS_KEY_ID and ACCESS_SECRET_KEY; null backup_destination: no backups (not for production)."
  type = object({
    chart_version      = optional(string, "0.3.1")
    instances          = optional(number, 3)
    storage_size       = optional(string, "100Gi")
    storage_class      = optional(string, "")
    cpu                = optional(string, "2")
    memory             = optional(string, "8Gi")
    max_connections    = optional(number, 400)
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
    error_message = "postgres.storage_size must look like 100Gi."
  }

  validation {
    condition     = var.postgres.max_connections >= 50 && var.postgres.max_connections <= 5000
    error_message = "postgres.max_connections must be 50 to 5000."
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
  description = "Use an existing PostgreSQL instead of deploying one: a Secret in the namespace and the key holding its postgres:// URL."
  type = object({
    name = string
    key  = string
  })
  default = null
}

variable "database_max_connections" {
  description = "Pooled PostgreSQL connections per gateway process (STARLING_DATABASE__MAX_CONNECTIONS). Keep max_replicas × this under postgres.max_connections."
  type        = number
  default     = 10

  validation {
    condition     = var.database_max_connections >= 1 && var.database_max_connections <= 200
    error_message = "database_max_connections must be 1 to 200."
  }
}

variable "redis_password" {
  description = "Password of the cell's Redis (24+ URL-safe characters). Null: no password, NetworkPolicy only. Never an output."
  type        = string
  default     = null
  sensitive   = true
}

variable "redis_max_memory" {
  description = "maxmemory of the cell's Redis (presence, routing, rate limits: small per connection)."
  type        = string
  default     = "2gb"
}

variable "pulsar" {
  description = "The cell's Apache Pulsar, installed with its official Helm chart (https://pulsar.apache.org/charts), TLS-only with token authentication and authorization (needs cert-manager in the cluster, and the token secret: see docs/OPERATIONS.md). expose: also put the proxy behind a load balancer (annotations: make it internal), TLS ports only, for a control plane in another Kubernetes cluster; expose_dns_names: the names it is reached by, for its certificate."
  type = object({
    chart_version      = optional(string, "4.6.0")
    zookeepers         = optional(number, 3)
    bookies            = optional(number, 3)
    brokers            = optional(number, 3)
    proxies            = optional(number, 2)
    bookie_journal     = optional(string, "20Gi")
    bookie_ledgers     = optional(string, "100Gi")
    zookeeper_data     = optional(string, "20Gi")
    expose             = optional(bool, false)
    expose_annotations = optional(map(string), {})
    # DNS names the exposed proxy is reached by (added to its TLS certificate).
    expose_dns_names = optional(list(string), [])
    # The Kubernetes secret holding the nodes' Pulsar token (STARLING_PULSAR__TOKEN). Null:
    # "<release>-token-admin", key TOKEN, as the chart's prepare_helm_release.sh names it.
    token_secret = optional(object({ name = string, key = string }))
    # Backlog at which the broker compacts the app-config topic (pulsar.compaction_threshold_bytes).
    compaction_threshold_bytes = optional(number, 1048576)
  })
  default = {}

  validation {
    condition     = contains([1, 3, 5], var.pulsar.zookeepers)
    error_message = "pulsar.zookeepers must be 1, 3 or 5 (a quorum)."
  }

  validation {
    condition     = var.pulsar.bookies >= 1 && var.pulsar.brokers >= 1 && var.pulsar.proxies >= 1
    error_message = "pulsar.bookies, pulsar.brokers and pulsar.proxies must be at least 1."
  }

  validation {
    condition     = var.pulsar.compaction_threshold_bytes >= 1024
    error_message = "pulsar.compaction_threshold_bytes must be at least 1024."
  }
}

variable "pulsar_topic_prefix" {
  description = "Prefix of Starling's topics (STARLING_PULSAR__TOPIC_PREFIX): the same as the control plane's."
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

variable "control_plane_url" {
  description = "The control plane's base URL as the gateway pods reach it (STARLING_GATEWAY__CONTROL_PLANE_URL), e.g. http://starling-control-plane.starling.svc:7400: the server API's webhook endpoint calls go there. Null: those calls answer 503 and endpoints are managed through the admin API or the console."
  type        = string
  default     = null

  validation {
    condition     = var.control_plane_url == null || can(regex("^https?://[^/?#@]+", coalesce(var.control_plane_url, "x")))
    error_message = "control_plane_url must be an http:// or https:// base URL."
  }
}
