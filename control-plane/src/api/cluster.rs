//! `/admin/v1/clusters`
use axum::extract::State;
use axum::http::StatusCode;
use starling_core::error::{ApiError, ErrorBody};
use starling_core::http::Path;
use starling_core::http::{Json, Page, PageParams, Query};
use starling_core::id::ClusterId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AdminState;
use crate::service::cell_credential::{CellCredentialCreatedOut, CellCredentialOut};
use crate::service::cluster::{ClusterIn, ClusterOut, ClusterPatch};

pub(super) fn routes() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_clusters, create_cluster))
        .routes(routes!(get_cluster, update_cluster, delete_cluster))
        .routes(routes!(list_credentials, issue_credential))
        .routes(routes!(revoke_credential))
}

fn cluster_id(s: &str) -> Result<ClusterId, ApiError> {
    ClusterId::parse(s).map_err(|_| ApiError::not_found("cluster", s))
}

/// List data-plane clusters
#[utoipa::path(get, path = "/admin/v1/clusters", tag = "clusters", params(PageParams),
    responses((status = 200, description = "Success", body = Page<ClusterOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_clusters(
    State(s): State<AdminState>,
    Query(page): Query<PageParams>,
) -> Result<Json<Page<ClusterOut>>, ApiError> {
    Ok(Json(s.cp.list_clusters(&page).await?))
}

/// Register a data-plane cluster
#[utoipa::path(post, path = "/admin/v1/clusters", tag = "clusters", request_body = ClusterIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Created", body = ClusterOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn create_cluster(
    State(s): State<AdminState>,
    Json(input): Json<ClusterIn>,
) -> Result<(StatusCode, Json<ClusterOut>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.cp.create_cluster(input).await?)))
}

/// Get a cluster
#[utoipa::path(get, path = "/admin/v1/clusters/{cluster_id}", tag = "clusters",
    params(("cluster_id" = String, Path, description = "Cluster id")),
    responses((status = 200, description = "Success", body = ClusterOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn get_cluster(
    State(s): State<AdminState>,
    Path(c): Path<String>,
) -> Result<Json<ClusterOut>, ApiError> {
    Ok(Json(s.cp.get_cluster(cluster_id(&c)?.as_str()).await?))
}

/// Update a cluster (endpoint, capacity, status)
#[utoipa::path(patch, path = "/admin/v1/clusters/{cluster_id}", tag = "clusters", request_body = ClusterPatch,
    params(("cluster_id" = String, Path, description = "Cluster id")),
    responses((status = 200, description = "Success", body = ClusterOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn update_cluster(
    State(s): State<AdminState>,
    Path(c): Path<String>,
    Json(p): Json<ClusterPatch>,
) -> Result<Json<ClusterOut>, ApiError> {
    Ok(Json(
        s.cp.update_cluster(cluster_id(&c)?.as_str(), p).await?,
    ))
}

/// Remove a cluster that carries no apps
#[utoipa::path(delete, path = "/admin/v1/clusters/{cluster_id}", tag = "clusters",
    params(("cluster_id" = String, Path, description = "Cluster id")),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn delete_cluster(
    State(s): State<AdminState>,
    Path(c): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.cp.delete_cluster(cluster_id(&c)?.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a cluster's credentials (never their secrets)
#[utoipa::path(get, path = "/admin/v1/clusters/{cluster_id}/credentials", tag = "clusters",
    params(("cluster_id" = String, Path, description = "Cluster id")),
    responses((status = 200, description = "Success, oldest first, revoked ones too", body = Vec<CellCredentialOut>), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn list_credentials(
    State(s): State<AdminState>,
    Path(c): Path<String>,
) -> Result<Json<Vec<CellCredentialOut>>, ApiError> {
    Ok(Json(
        s.cp.list_cell_credentials(cluster_id(&c)?.as_str()).await?,
    ))
}

/// Issue a credential for the cell's nodes to present to the control plane's internal API
///
/// The secret (`scc_<id>.<secret>`) is in this answer only. Several credentials may be active at
/// once: to rotate, issue a new one, give it to the cell's nodes, then revoke the old one.
#[utoipa::path(post, path = "/admin/v1/clusters/{cluster_id}/credentials", tag = "clusters",
    params(("cluster_id" = String, Path, description = "Cluster id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the first result is replayed")),
    responses((status = 201, description = "Issued", body = CellCredentialCreatedOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn issue_credential(
    State(s): State<AdminState>,
    Path(c): Path<String>,
) -> Result<(StatusCode, Json<CellCredentialCreatedOut>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.cp.issue_cell_credential(cluster_id(&c)?.as_str()).await?),
    ))
}

/// Revoke a cell credential: the control plane refuses it from now on
#[utoipa::path(post, path = "/admin/v1/clusters/{cluster_id}/credentials/{credential_id}/revoke", tag = "clusters",
    params(("cluster_id" = String, Path, description = "Cluster id"),
        ("credential_id" = String, Path, description = "Credential id (scc_…)")),
    responses((status = 200, description = "Revoked (also when it already was)", body = CellCredentialOut), (status = "4XX", description = "Client error: `code` says which, `message` and `field` say what", body = ErrorBody)))]
async fn revoke_credential(
    State(s): State<AdminState>,
    Path((c, k)): Path<(String, String)>,
) -> Result<Json<CellCredentialOut>, ApiError> {
    let k = starling_core::id::CellCredentialId::parse(&k)
        .map_err(|_| ApiError::not_found("credential", &k))?;
    Ok(Json(
        s.cp.revoke_cell_credential(cluster_id(&c)?.as_str(), k.as_str())
            .await?,
    ))
}
