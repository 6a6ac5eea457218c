# One control plane and two data-plane cells in two regions, each in its own Kubernetes cluster.
#
#   terraform init && terraform apply          (see docs/OPERATIONS.md for the whole procedure)
#
# The control plane publishes app configuration on the EU cell's Pulsar (exposed on an internal
# load balancer). The US cell reads it from its own Pulsar, so the feed topic must be
# geo-replicated from the EU Pulsar to the US one: docs/OPERATIONS.md ("Several regions") gives
# the pulsar-admin commands; these modules do not automate it. After apply, register both cells
# with the control plane (the `register_cells` output) and place apps on them.

provider "kubernetes" {
  alias          = "control"
  config_path    = var.kubeconfig_path
  config_context = var.contexts.control
}

provider "helm" {
  alias = "control"

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.contexts.control
  }
}

provider "kubernetes" {
  alias          = "eu"
  config_path    = var.kubeconfig_path
  config_context = var.contexts.eu
}

provider "helm" {
  alias = "eu"

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.contexts.eu
  }
}

provider "kubernetes" {
  alias          = "us"
  config_path    = var.kubeconfig_path
  config_context = var.contexts.us
}

provider "helm" {
  alias = "us"

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.contexts.us
  }
}

locals {
  # Each plane backs up under its own prefix of the bucket (null: no backups).
  backup = {
    for plane in ["control", "eu-1", "us-1"] : plane => {
      backup_destination = try("${var.backups.destination}/${plane}", null)
      backup_secret      = try(var.backups.secret, null)
    }
  }
}

module "postgres_operator_control" {
  source    = "../../modules/postgres-operator"
  providers = { helm = helm.control }
}

module "postgres_operator_eu" {
  source    = "../../modules/postgres-operator"
  providers = { helm = helm.eu }
}

module "postgres_operator_us" {
  source    = "../../modules/postgres-operator"
  providers = { helm = helm.us }
}

# cluster_id comes with a second apply, once the cell is registered (docs/OPERATIONS.md,
# "Registering a cell"); control_plane_public_keys / control_plane_signing_key from `starling keygen`.
module "cell_eu" {
  source    = "../../modules/data-plane-cell"
  providers = { kubernetes = kubernetes.eu, helm = helm.eu }

  name                      = "eu-1"
  region                    = var.regions.eu
  image                     = var.image
  key_hash_secret           = var.key_hash_secret
  cluster_id                = var.cluster_ids.eu
  control_plane_public_keys = [var.control_plane_public_key]
  postgres                  = local.backup["eu-1"]
  load_balancer             = { annotations = var.public_lb_annotations.eu }
  pulsar = {
    expose             = true
    expose_annotations = var.internal_lb_annotations
  }

  depends_on = [module.postgres_operator_eu]
}

module "cell_us" {
  source    = "../../modules/data-plane-cell"
  providers = { kubernetes = kubernetes.us, helm = helm.us }

  name                      = "us-1"
  region                    = var.regions.us
  image                     = var.image
  key_hash_secret           = var.key_hash_secret
  cluster_id                = var.cluster_ids.us
  control_plane_public_keys = [var.control_plane_public_key]
  postgres                  = local.backup["us-1"]
  load_balancer             = { annotations = var.public_lb_annotations.us }

  depends_on = [module.postgres_operator_us]
}

module "control_plane" {
  source    = "../../modules/control-plane"
  providers = { kubernetes = kubernetes.control, helm = helm.control }

  image                     = var.image
  operator_token            = var.operator_token
  key_hash_secret           = var.key_hash_secret
  control_plane_signing_key = var.control_plane_signing_key
  sealing_key               = var.sealing_key
  postgres                  = local.backup["control"]
  pulsar_url                = module.cell_eu.pulsar_external_url
  pulsar_admin_url          = module.cell_eu.pulsar_external_admin_url
  pulsar_ca_pem             = module.cell_eu.pulsar_ca_pem
  pulsar_token              = var.pulsar_admin_token

  depends_on = [module.postgres_operator_control]
}
