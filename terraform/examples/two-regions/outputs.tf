output "admin_api_url" {
  description = "In-cluster URL of the admin API (reach it with kubectl port-forward or through your VPN)."
  value       = module.control_plane.admin_api_url
}

output "cells" {
  description = "Public endpoints of each cell: server REST API base URL and WebSocket URL."
  value = {
    for c in [module.cell_eu, module.cell_us] : c.name => {
      region        = c.region
      endpoint      = c.endpoint
      websocket_url = c.websocket_url
      namespace     = c.namespace
    }
  }
}

output "register_cells" {
  description = "Admin API calls that register the two cells with the control plane (run them once, with STARLING_TOKEN and ADMIN set)."
  value = [
    for c in [module.cell_eu, module.cell_us] : format(
      "curl -s -X POST \"$ADMIN/admin/v1/clusters\" -H \"Authorization: Bearer $STARLING_TOKEN\" -H 'content-type: application/json' -d '%s'",
      jsonencode({ name = c.name, region = c.region, capacity_apps = 1000, endpoint = c.endpoint }),
    )
  ]
}
