# The Starling control plane on Kubernetes: `starling migrate` as a Job, then `starling
# control-plane` as a Deployment behind a Service, on a CloudNativePG PostgreSQL and a small
# Redis. Every setting reaches the process as a STARLING_<SECTION>__<KEY> variable (see
# docs/CONFIGURATION.md); tests/e2e/image.rs starts the binary with exactly the names used here.

locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace

  labels = {
    "app.kubernetes.io/name"       = "starling"
    "app.kubernetes.io/component"  = "control-plane"
    "app.kubernetes.io/instance"   = var.name
    "app.kubernetes.io/part-of"    = "starling"
    "app.kubernetes.io/managed-by" = "terraform"
  }
  selector = {
    "app.kubernetes.io/component" = "control-plane"
    "app.kubernetes.io/instance"  = var.name
  }

  pg_cluster  = "${var.name}-pg"
  auth_secret = var.existing_auth_secret != null ? var.existing_auth_secret : kubernetes_secret_v1.auth[0].metadata[0].name

  # Where STARLING_DATABASE__URL comes from: CloudNativePG's app secret (key `uri`,
  # postgresql://…) or the operator's own secret.
  database_secret = var.external_database_secret != null ? var.external_database_secret : {
    name = "${local.pg_cluster}-app"
    key  = "uri"
  }

  redis_url_plain = var.redis_enabled && var.redis_password == null ? "redis://${module.redis[0].host}:6379/0" : null

  plain_env = {
    for k, v in {
      "STARLING_SERVER__LISTEN"                     = "0.0.0.0:7400"
      "STARLING_DATABASE__MAX_CONNECTIONS"          = tostring(var.database_max_connections)
      "STARLING_CACHE__REDIS_URL"                   = local.redis_url_plain
      "STARLING_TELEMETRY__LOG_FORMAT"              = "json"
      "STARLING_TELEMETRY__LOG_FILTER"              = var.log_filter
      "STARLING_TELEMETRY__SERVICE_NAME"            = "starling-control-plane"
      "STARLING_TELEMETRY__OTLP_ENDPOINT"           = var.otlp_endpoint
      "STARLING_PULSAR__URL"                        = var.pulsar_url
      "STARLING_PULSAR__TOPIC_PREFIX"               = var.pulsar_topic_prefix
      "STARLING_PULSAR__ADMIN_URL"                  = var.pulsar_admin_url
      "STARLING_PULSAR__COMPACTION_THRESHOLD_BYTES" = tostring(var.pulsar_compaction_threshold_bytes)
    } : k => v if v != null
  }

  secret_env = merge(
    {
      "STARLING_DATABASE__URL"         = local.database_secret
      "STARLING_AUTH__OPERATOR_TOKEN"  = { name = local.auth_secret, key = "operator-token" }
      "STARLING_AUTH__KEY_HASH_SECRET" = { name = local.auth_secret, key = "key-hash-secret" }
    },
    var.control_plane_signing_key != null || var.existing_auth_secret != null ? {
      "STARLING_AUTH__CONTROL_PLANE_SIGNING_KEY" = { name = local.auth_secret, key = "control-plane-signing-key" }
    } : {},
    var.redis_enabled && var.redis_password != null ? {
      "STARLING_CACHE__REDIS_URL" = { name = kubernetes_secret_v1.redis_url[0].metadata[0].name, key = "url" }
    } : {},
  )

  # The migrate Job runs again whenever the image changes.
  migrate_job = "${var.name}-migrate-${substr(sha1(var.image), 0, 10)}"
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = { "app.kubernetes.io/part-of" = "starling" }
  }
}

resource "kubernetes_secret_v1" "auth" {
  count = var.existing_auth_secret == null ? 1 : 0

  metadata {
    name      = "${var.name}-auth"
    namespace = local.namespace
    labels    = local.labels
  }

  data = merge(
    {
      "operator-token"  = var.operator_token
      "key-hash-secret" = var.key_hash_secret
    },
    var.control_plane_signing_key != null ? { "control-plane-signing-key" = var.control_plane_signing_key } : {},
  )

  lifecycle {
    precondition {
      condition     = var.operator_token != null && var.key_hash_secret != null
      error_message = "Set operator_token and key_hash_secret, or existing_auth_secret."
    }
  }
}

module "redis" {
  source = "../redis"
  count  = var.redis_enabled ? 1 : 0

  name              = "${var.name}-redis"
  namespace         = local.namespace
  password          = var.redis_password
  max_memory        = "128mb"
  client_pod_labels = local.selector
  resources = {
    memory_request = "64Mi"
    memory_limit   = "256Mi"
  }
}

resource "kubernetes_secret_v1" "redis_url" {
  count = var.redis_enabled && var.redis_password != null ? 1 : 0

  metadata {
    name      = "${var.name}-redis-url"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    url = "redis://:${var.redis_password}@${module.redis[0].host}:6379/0"
  }
}

resource "helm_release" "postgres" {
  count = var.external_database_secret == null ? 1 : 0

  name       = local.pg_cluster
  repository = "https://cloudnative-pg.github.io/charts"
  chart      = "cluster"
  version    = var.postgres.chart_version
  namespace  = local.namespace
  wait       = true
  timeout    = 900

  values = [yamlencode({
    fullnameOverride = local.pg_cluster
    type             = "postgresql"
    mode             = "standalone"
    cluster = {
      instances = var.postgres.instances
      storage = {
        size         = var.postgres.storage_size
        storageClass = var.postgres.storage_class
      }
      initdb = {
        database = "starling"
        owner    = "starling"
      }
      monitoring = { enabled = false }
    }
    backups = var.postgres.backup_destination == null ? { enabled = false } : {
      enabled         = true
      provider        = startswith(var.postgres.backup_destination, "gs://") ? "google" : startswith(var.postgres.backup_destination, "https://") ? "azure" : "s3"
      destinationPath = var.postgres.backup_destination
      endpointURL     = var.postgres.backup_endpoint
      secret          = { create = false, name = var.postgres.backup_secret }
      retentionPolicy = var.postgres.backup_retention
      scheduledBackups = [{
        name                 = "daily"
        schedule             = var.postgres.backup_schedule
        backupOwnerReference = "self"
        method               = "barmanObjectStore"
      }]
    }
  })]
}

# Migrations run once per image, before the new Deployment rolls out (the processes would also
# migrate at start, but several replicas starting at once would race).
resource "kubernetes_job_v1" "migrate" {
  metadata {
    name      = local.migrate_job
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/component" = "migrate" })
  }

  spec {
    backoff_limit = 6

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/component" = "migrate" })
      }

      spec {
        restart_policy                  = "OnFailure"
        automount_service_account_token = false

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532

          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name  = "migrate"
          image = var.image
          args  = ["migrate"]

          env {
            name = "STARLING_DATABASE__URL"
            value_from {
              secret_key_ref {
                name = local.database_secret.name
                key  = local.database_secret.key
              }
            }
          }

          env {
            name  = "STARLING_TELEMETRY__LOG_FORMAT"
            value = "json"
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true

            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  wait_for_completion = true

  timeouts {
    create = "15m"
    update = "15m"
  }

  depends_on = [helm_release.postgres]
}

resource "kubernetes_deployment_v1" "control_plane" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    replicas = var.replicas

    selector {
      match_labels = local.selector
    }

    strategy {
      type = "RollingUpdate"

      rolling_update {
        max_surge       = "1"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels = local.labels
        annotations = {
          "prometheus.io/scrape" = "true"
          "prometheus.io/port"   = "7400"
          "prometheus.io/path"   = "/metrics"
        }
      }

      spec {
        automount_service_account_token  = false
        termination_grace_period_seconds = 30

        security_context {
          run_as_non_root = true
          run_as_user     = 65532
          run_as_group    = 65532

          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        topology_spread_constraint {
          max_skew           = 1
          topology_key       = "topology.kubernetes.io/zone"
          when_unsatisfiable = "ScheduleAnyway"

          label_selector {
            match_labels = local.selector
          }
        }

        container {
          name  = "control-plane"
          image = var.image
          args  = ["control-plane"]

          port {
            name           = "http"
            container_port = 7400
          }

          dynamic "env" {
            for_each = local.plain_env
            content {
              name  = env.key
              value = env.value
            }
          }

          dynamic "env" {
            for_each = local.secret_env
            content {
              name = env.key
              value_from {
                secret_key_ref {
                  name = env.value.name
                  key  = env.value.key
                }
              }
            }
          }

          resources {
            requests = {
              cpu    = var.resources.cpu_request
              memory = var.resources.memory_request
            }
            limits = {
              memory = var.resources.memory_limit
            }
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = "http"
            }
            period_seconds    = 5
            failure_threshold = 3
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = "http"
            }
            initial_delay_seconds = 10
            period_seconds        = 10
            failure_threshold     = 6
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true

            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  depends_on = [kubernetes_job_v1.migrate]
}

resource "kubernetes_service_v1" "control_plane" {
  metadata {
    name        = var.name
    namespace   = local.namespace
    labels      = local.labels
    annotations = var.service_annotations
  }

  spec {
    type     = var.service_type
    selector = local.selector

    port {
      name        = "http"
      port        = 80
      target_port = "http"
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "control_plane" {
  count = var.replicas > 1 ? 1 : 0

  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    max_unavailable = "1"

    selector {
      match_labels = local.selector
    }
  }
}
