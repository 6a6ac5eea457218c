# One Starling data-plane cell on Kubernetes: gateway nodes (`starling data-plane`) behind an L4
# load balancer, with the cell's own Apache Pulsar (official Helm chart), Redis and PostgreSQL
# (CloudNativePG). The nodes provision their cell on Pulsar (namespaces, feed policies, role grants)
# themselves at start (STARLING_PULSAR__ADMIN_URL). Every setting reaches the nodes as a STARLING_<SECTION>__<KEY> variable (see
# docs/CONFIGURATION.md); tests/e2e/image.rs starts the binary with exactly the names used here.
#
# The gateways are a StatefulSet, not a Deployment: a node's id is its pod name, and its Pulsar
# inbox (`<prefix>inbox-<node id>`, with a durable subscription) must outlive a restart, so names
# must be stable (gw-0, gw-1, …) rather than random. OrderedReady also means the first node
# applies the cell's migrations alone, and a rolling update replaces one node at a time.

locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : coalesce(var.namespace, "starling-${var.name}")

  labels = {
    "app.kubernetes.io/name"       = "starling"
    "app.kubernetes.io/part-of"    = "starling"
    "app.kubernetes.io/managed-by" = "terraform"
    "starling.dev/cell"            = var.name
    "starling.dev/region"          = var.region
  }
  gateway_selector = {
    "app.kubernetes.io/component" = "gateway"
    "starling.dev/cell"           = var.name
  }
  gateway_labels = merge(local.labels, local.gateway_selector)

  gateway     = "${var.name}-gw"
  pg_cluster  = "${var.name}-pg"
  pulsar      = "${var.name}-pulsar"
  auth_secret = var.existing_auth_secret != null ? var.existing_auth_secret : kubernetes_secret_v1.auth[0].metadata[0].name

  database_secret = var.external_database_secret != null ? var.external_database_secret : {
    name = "${local.pg_cluster}-app"
    key  = "uri"
  }

  # The release name holds the chart's name, so the chart's objects are named "<release>-…".
  # Clients go through the proxy; the admin REST API is asked of the brokers directly. TLS only
  # (the chart's certificates, signed by its cert-manager CA, name these service hosts: see
  # tls.*.dnsNames below), with the token of pulsar.token_secret.
  pulsar_proxy_host  = "${local.pulsar}-proxy.${local.namespace}.svc"
  pulsar_broker_host = "${local.pulsar}-broker.${local.namespace}.svc"
  pulsar_url         = "pulsar+ssl://${local.pulsar_proxy_host}:6651"
  pulsar_admin_url   = "https://${local.pulsar_broker_host}:8443"
  # The chart's CA (cert-manager keeps it in this secret), mounted into the gateway pods.
  pulsar_ca_secret = "${local.pulsar}-ca-tls"
  pulsar_ca_dir    = "/etc/starling/pulsar-ca"
  # The token the nodes show the broker. The chart does not mint tokens: its
  # scripts/pulsar/prepare_helm_release.sh (or the operator) stores them as
  # "<release>-token-<role>" with key TOKEN. The nodes provision their namespace
  # (STARLING_PULSAR__ADMIN_URL), which needs a super-user token (role "admin") for now.
  pulsar_token_secret = var.pulsar.token_secret != null ? var.pulsar.token_secret : {
    name = "${local.pulsar}-token-admin"
    key  = "TOKEN"
  }
  # The cell's own app-config topic: only the apps placed on it (see core/src/pulsar.rs feed_topic).
  feed_topic = "${var.pulsar_topic_prefix}app-config-${lower(var.cluster_id)}"

  redis_url_plain = var.redis_password == null ? "redis://${module.redis.host}:6379/0" : null

  plain_env = {
    for k, v in {
      "STARLING_SERVER__LISTEN"                     = "0.0.0.0:7400"
      "STARLING_SERVER__INTERNAL_LISTEN"            = "0.0.0.0:${var.internal_port}"
      "STARLING_DATABASE__MAX_CONNECTIONS"          = tostring(var.database_max_connections)
      "STARLING_CACHE__REDIS_URL"                   = local.redis_url_plain
      "STARLING_PULSAR__URL"                        = local.pulsar_url
      "STARLING_PULSAR__TOPIC_PREFIX"               = var.pulsar_topic_prefix
      "STARLING_PULSAR__ADMIN_URL"                  = local.pulsar_admin_url
      "STARLING_PULSAR__TLS_CA_FILE"                = "${local.pulsar_ca_dir}/ca.crt"
      "STARLING_PULSAR__COMPACTION_THRESHOLD_BYTES" = tostring(var.pulsar.compaction_threshold_bytes)
      "STARLING_TELEMETRY__LOG_FORMAT"              = "json"
      "STARLING_TELEMETRY__LOG_FILTER"              = var.log_filter
      "STARLING_TELEMETRY__SERVICE_NAME"            = "starling-gateway"
      "STARLING_TELEMETRY__OTLP_ENDPOINT"           = var.otlp_endpoint
      "STARLING_GATEWAY__HEARTBEAT_SECS"            = tostring(var.gateway.heartbeat_secs)
      "STARLING_GATEWAY__REGISTRY_TTL_SECS"         = tostring(var.gateway.registry_ttl_secs)
      "STARLING_GATEWAY__MAX_CONNECTIONS_PER_USER"  = tostring(var.gateway.max_connections_per_user)
      "STARLING_GATEWAY__MAX_FRAME_BYTES"           = tostring(var.gateway.max_frame_bytes)
      "STARLING_GATEWAY__OUTBOUND_QUEUE"            = tostring(var.gateway.outbound_queue)
      "STARLING_GATEWAY__WRITE_DELAY_MS"            = tostring(var.gateway.write_delay_ms)
      "STARLING_GATEWAY__CONTROL_PLANE_URL"         = var.control_plane_url
      "STARLING_GATEWAY__CLUSTER_ID"                = var.cluster_id
      "STARLING_AUTH__CONTROL_PLANE_PUBLIC_KEYS"    = jsonencode(var.control_plane_public_keys)
    } : k => v if v != null
  }

  secret_env = merge(
    {
      "STARLING_DATABASE__URL"         = local.database_secret
      "STARLING_AUTH__KEY_HASH_SECRET" = { name = local.auth_secret, key = "key-hash-secret" }
      "STARLING_PULSAR__TOKEN"         = local.pulsar_token_secret
    },
    var.redis_password != null ? {
      "STARLING_CACHE__REDIS_URL" = { name = kubernetes_secret_v1.redis_url[0].metadata[0].name, key = "url" }
    } : {},
    # The cell's own identity towards the control plane: required with control_plane_url.
    var.control_plane_url != null ? {
      "STARLING_GATEWAY__CELL_CREDENTIAL" = { name = local.auth_secret, key = "cell-credential" }
    } : {},
    # The cell's config keys: app configuration reaches the nodes sealed to them.
    local.config_keys_set ? {
      "STARLING_GATEWAY__CONFIG_KEYS" = { name = local.auth_secret, key = "config-keys" }
    } : {},
  )
  config_keys_set = nonsensitive(length(var.config_keys)) > 0 || var.config_keys_in_existing_secret
}

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name = coalesce(var.namespace, "starling-${var.name}")
    labels = {
      "app.kubernetes.io/part-of" = "starling"
      "starling.dev/cell"         = var.name
    }
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
    { "key-hash-secret" = var.key_hash_secret },
    var.cell_credential != null ? { "cell-credential" = var.cell_credential } : {},
    nonsensitive(length(var.config_keys)) > 0 ? { "config-keys" = jsonencode(var.config_keys) } : {},
  )

  lifecycle {
    precondition {
      condition     = var.key_hash_secret != null
      error_message = "Set key_hash_secret (the control plane's) or existing_auth_secret."
    }
    precondition {
      condition     = var.control_plane_url == null || var.cell_credential != null
      error_message = "Set cell_credential (POST /admin/v1/clusters/{id}/credentials) with control_plane_url, or existing_auth_secret holding `cell-credential`."
    }
  }
}

# --- Redis: presence, routing, rate limits ---------------------------------------------------

module "redis" {
  source = "../redis"

  name              = "${var.name}-redis"
  namespace         = local.namespace
  password          = var.redis_password
  max_memory        = var.redis_max_memory
  client_pod_labels = local.gateway_selector
}

resource "kubernetes_secret_v1" "redis_url" {
  count = var.redis_password != null ? 1 : 0

  metadata {
    name      = "${var.name}-redis-url"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    url = "redis://:${var.redis_password}@${module.redis.host}:6379/0"
  }
}

# --- PostgreSQL: messages, conversations, outbox -------------------------------------------

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
      resources = {
        requests = { cpu = var.postgres.cpu, memory = var.postgres.memory }
        limits   = { memory = var.postgres.memory }
      }
      postgresql = {
        parameters = {
          max_connections = tostring(var.postgres.max_connections)
        }
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

# --- Apache Pulsar: node inboxes and the app-config feed ------------------------------------

resource "helm_release" "pulsar" {
  name       = local.pulsar
  repository = "https://pulsar.apache.org/charts"
  chart      = "pulsar"
  version    = var.pulsar.chart_version
  namespace  = local.namespace
  wait       = true
  timeout    = 1800

  values = [yamlencode({
    namespace       = local.namespace
    namespaceCreate = false
    components = {
      zookeeper      = true
      bookkeeper     = true
      autorecovery   = true
      broker         = true
      proxy          = true
      toolset        = false
      functions      = false
      pulsar_manager = false
    }
    # The chart's bundled monitoring stacks: bring your own Prometheus instead.
    "victoria-metrics-k8s-stack" = { enabled = false }
    "kube-prometheus-stack"      = { enabled = false }
    # TLS on the proxy and the brokers, with certificates from cert-manager (which must be
    # installed in the cluster) signed by the chart's own self-signed CA. With TLS on the proxy
    # its Service carries only the TLS ports (6651, 443): nothing reaches Pulsar in clear text
    # from outside, exposed or not. Extra names: the service hosts the nodes use (the chart's
    # own names are the pod wildcards and the bare service name), and the exposed ones.
    tls = {
      enabled = true
      proxy = {
        enabled  = true
        dnsNames = concat([local.pulsar_proxy_host, "${local.pulsar_proxy_host}.cluster.local"], var.pulsar.expose_dns_names)
      }
      broker = {
        enabled  = true
        dnsNames = [local.pulsar_broker_host, "${local.pulsar_broker_host}.cluster.local"]
      }
    }
    certs = {
      internal_issuer = { enabled = true, type = "selfsigning" }
    }
    # Every client shows a token (JWT), and may do only what its role was granted.
    auth = {
      authentication = {
        enabled  = true
        provider = "jwt"
        jwt      = { usingSecretKey = false }
      }
      authorization = { enabled = true }
    }
    zookeeper = {
      replicaCount = var.pulsar.zookeepers
      volumes      = { data = { size = var.pulsar.zookeeper_data } }
    }
    bookkeeper = {
      replicaCount = var.pulsar.bookies
      volumes = {
        journal = { size = var.pulsar.bookie_journal }
        ledgers = { size = var.pulsar.bookie_ledgers }
      }
    }
    broker = {
      replicaCount = var.pulsar.brokers
      configData = {
        # Every write on min(3, bookies) bookies, acknowledged by a majority of them.
        managedLedgerDefaultEnsembleSize = tostring(min(3, var.pulsar.bookies))
        managedLedgerDefaultWriteQuorum  = tostring(min(3, var.pulsar.bookies))
        managedLedgerDefaultAckQuorum    = tostring(min(2, var.pulsar.bookies))
        # Inboxes are created on first use. The nodes give the feed topic its policies
        # themselves at start (pulsar.admin_url): retention, kept while inactive, compaction
        # threshold, which need topic-level policies.
        allowAutoTopicCreation     = "true"
        allowAutoTopicCreationType = "non-partitioned"
        topicLevelPoliciesEnabled  = "true"
        systemTopicEnabled         = "true"
      }
    }
    proxy = {
      replicaCount = var.pulsar.proxies
      service = {
        type        = var.pulsar.expose ? "LoadBalancer" : "ClusterIP"
        annotations = var.pulsar.expose_annotations
      }
    }
  })]
}

# The CA a control plane in another cluster needs to trust the exposed proxy (output pulsar_ca_pem).
data "kubernetes_secret_v1" "pulsar_ca" {
  metadata {
    name      = local.pulsar_ca_secret
    namespace = local.namespace
  }

  depends_on = [helm_release.pulsar]
}

data "kubernetes_service_v1" "pulsar_proxy" {
  count = var.pulsar.expose ? 1 : 0

  metadata {
    name      = "${local.pulsar}-proxy"
    namespace = local.namespace
  }

  depends_on = [helm_release.pulsar]
}

# --- Gateway nodes ---------------------------------------------------------------------------

# Headless: gives the StatefulSet's pods their stable names; clients use the load balancer.
resource "kubernetes_service_v1" "gateway_headless" {
  metadata {
    name      = "${local.gateway}-nodes"
    namespace = local.namespace
    labels    = local.gateway_labels
  }

  spec {
    cluster_ip                  = "None"
    publish_not_ready_addresses = true
    selector                    = local.gateway_selector

    port {
      name        = "http"
      port        = 7400
      target_port = "http"
    }
  }
}

resource "kubernetes_stateful_set_v1" "gateway" {
  metadata {
    name      = local.gateway
    namespace = local.namespace
    labels    = local.gateway_labels
  }

  spec {
    service_name          = kubernetes_service_v1.gateway_headless.metadata[0].name
    replicas              = var.gateway.min_replicas
    pod_management_policy = "OrderedReady"

    selector {
      match_labels = local.gateway_selector
    }

    update_strategy {
      type = "RollingUpdate"

      rolling_update {
        partition = 0
      }
    }

    template {
      metadata {
        labels = local.gateway_labels
        annotations = {
          "prometheus.io/scrape" = "true"
          "prometheus.io/port"   = "7400"
          "prometheus.io/path"   = "/metrics"
        }
      }

      spec {
        automount_service_account_token  = false
        termination_grace_period_seconds = var.gateway.termination_grace_seconds

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
            match_labels = local.gateway_selector
          }
        }

        volume {
          name = "pulsar-ca"
          secret {
            secret_name = local.pulsar_ca_secret
            items {
              key  = "ca.crt"
              path = "ca.crt"
            }
          }
        }

        container {
          name  = "gateway"
          image = var.image
          args  = ["data-plane"]

          port {
            name           = "http"
            container_port = 7400
          }

          # The internal API: only the internal ClusterIP Service below points here.
          port {
            name           = "internal"
            container_port = var.internal_port
          }

          # The CA of the cell's Pulsar (STARLING_PULSAR__TLS_CA_FILE).
          volume_mount {
            name       = "pulsar-ca"
            mount_path = local.pulsar_ca_dir
            read_only  = true
          }

          # The node's id is its pod name: stable across restarts (see the top of this file).
          env {
            name = "STARLING_GATEWAY__NODE_ID"
            value_from {
              field_ref {
                field_path = "metadata.name"
              }
            }
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
              cpu    = var.gateway.cpu_request
              memory = var.gateway.memory_request
            }
            limits = {
              memory = var.gateway.memory_limit
            }
          }

          # Ready when the cell's PostgreSQL answers; the load balancer sends new connections
          # only to ready nodes.
          readiness_probe {
            http_get {
              path = "/readyz"
              port = "http"
            }
            period_seconds    = 5
            failure_threshold = 2
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = "http"
            }
            initial_delay_seconds = 15
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

  # The autoscaler owns the replica count after creation.
  lifecycle {
    ignore_changes = [spec[0].replicas]
  }

  depends_on = [helm_release.pulsar, helm_release.postgres]
}

# The internal API (/internal/v1, the control plane's signed moderation calls) inside the
# Kubernetes network only: ClusterIP, never a load balancer. Register it as the cluster's
# internal_endpoint behind TLS (a mesh or a TLS-terminating proxy: https is required unless the
# cluster is marked development; docs/OPERATIONS.md).
resource "kubernetes_service_v1" "gateway_internal" {
  metadata {
    name      = "${local.gateway}-internal"
    namespace = local.namespace
    labels    = local.gateway_labels
  }

  spec {
    type     = "ClusterIP"
    selector = local.gateway_selector

    port {
      name        = "internal"
      protocol    = "TCP"
      port        = var.internal_port
      target_port = "internal"
    }
  }
}

# The public entry: WebSocket (/v1/connect) and server REST API (/v1) on one L4 port. L4 keeps
# WebSockets open as long as they live (no HTTP proxy idle timeout to tune).
resource "kubernetes_service_v1" "gateway" {
  metadata {
    name        = local.gateway
    namespace   = local.namespace
    labels      = local.gateway_labels
    annotations = var.load_balancer.annotations
  }

  spec {
    type                        = "LoadBalancer"
    selector                    = local.gateway_selector
    external_traffic_policy     = var.load_balancer.external_traffic_policy
    load_balancer_source_ranges = var.load_balancer.source_ranges

    port {
      name        = "gateway"
      protocol    = "TCP"
      port        = var.load_balancer.port
      target_port = "http"
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "gateway" {
  metadata {
    name      = local.gateway
    namespace = local.namespace
    labels    = local.gateway_labels
  }

  spec {
    min_replicas = var.gateway.min_replicas
    max_replicas = var.gateway.max_replicas

    scale_target_ref {
      api_version = "apps/v1"
      kind        = "StatefulSet"
      name        = kubernetes_stateful_set_v1.gateway.metadata[0].name
    }

    metric {
      type = "Resource"

      resource {
        name = "cpu"

        target {
          type                = "Utilization"
          average_utilization = var.gateway.cpu_target_percent
        }
      }
    }

    # With a custom-metrics adapter (e.g. prometheus-adapter) serving the gauge per pod.
    dynamic "metric" {
      for_each = var.gateway.connections_per_pod_target == null ? [] : [var.gateway.connections_per_pod_target]
      content {
        type = "Pods"

        pods {
          metric {
            name = "starling_ws_connections"
          }

          target {
            type          = "AverageValue"
            average_value = tostring(metric.value)
          }
        }
      }
    }

    behavior {
      scale_up {
        stabilization_window_seconds = 60
        select_policy                = "Max"

        policy {
          type           = "Percent"
          value          = 50
          period_seconds = 60
        }
      }

      # Removing a node closes its connections (clients reconnect and sync): go slowly.
      scale_down {
        stabilization_window_seconds = 900
        select_policy                = "Min"

        policy {
          type           = "Pods"
          value          = 1
          period_seconds = 300
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "gateway" {
  metadata {
    name      = local.gateway
    namespace = local.namespace
    labels    = local.gateway_labels
  }

  spec {
    max_unavailable = var.gateway.max_unavailable

    selector {
      match_labels = local.gateway_selector
    }
  }
}
