//! Query safety: the cost of every query is calculated before it runs (every field costs 1, a
//! connection costs `first` times its selection), refused above `console.max_cost` or above the
//! caller's remaining budget, and reported in the response's `extensions.cost`:
//!
//! ```json
//! {"cost": {"requestedQueryCost": 42, "maxQueryCost": 1000,
//!           "budget": {"remaining": 1958, "maximum": 2000, "restoreRate": 100}}}
//! ```
//!
//! The budget is a bucket of points per account (per client address before login) that refills
//! at a steady rate, like Shopify's Admin API. Depth is limited too. Costs are computed with
//! [`page_cost`], [`times`] and [`plus`]: saturating, with `first` clamped to the range it will be
//! checked against, so that no argument (`first: 2147483647`, nested) can wrap the sum around to
//! a small number in a release build or panic in a debug one. Errors that async-graphql
//! itself raises (parse and validation errors) get `extensions.code = graphql_invalid` here, so
//! that every error has a code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextRequest, NextValidation,
};
use async_graphql::{Response, ServerError, ValidationResult, Value};
use starling_core::error::ErrorCode;

use crate::Console;
use crate::auth::{Origin, Principal};
use crate::error::{Fail, code};

/// The most one field's cost can be. async-graphql adds the fields' costs up with plain `+`:
/// capped here, a query would need 2^23 fields of this cost to overflow a `usize`, and its body
/// (at most `console.max_body_bytes`) cannot hold that many.
pub const FIELD_COST_CAP: usize = 1 << 40;

/// The cost of a connection (or list) of `first` items (default 20, clamped to
/// 1..=[`page::MAX_FIRST`](crate::page::MAX_FIRST) as the resolver will check it) of `child`
/// points each, plus `base`.
pub fn page_cost(first: Option<i32>, child: usize, base: usize) -> usize {
    let n = first
        .unwrap_or(crate::page::DEFAULT_FIRST)
        .clamp(1, crate::page::MAX_FIRST) as usize;
    plus(base, n.saturating_mul(child))
}

/// `n` times `child`, saturating at [`FIELD_COST_CAP`].
pub fn times(n: usize, child: usize) -> usize {
    n.saturating_mul(child).min(FIELD_COST_CAP)
}

/// `n` plus `child`, saturating at [`FIELD_COST_CAP`].
pub fn plus(n: usize, child: usize) -> usize {
    n.saturating_add(child).min(FIELD_COST_CAP)
}

/// Buckets of points, one per caller.
#[derive(Debug)]
pub struct Budget {
    size: f64,
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Budget {
    /// Buckets of `size` points refilling at `rate` points per second.
    pub fn new(size: u32, rate: u32) -> Self {
        Self {
            size: size as f64,
            rate: rate as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Buckets of `size` points refilling at a fractional rate (points per second).
    pub fn with_rate(size: u32, per_second: f64) -> Self {
        Self {
            size: size as f64,
            rate: per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Gives `n` points back to `key`'s bucket (never above its size): a reservation made with
    /// [`Budget::spend`] that turned out not to be needed.
    pub fn refund(&self, key: &str, n: u64) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((points, _)) = map.get_mut(key) {
            *points = (*points + n as f64).min(self.size);
        }
    }

    /// Spends `cost` from `key`'s bucket: the points left, or the seconds to wait.
    pub fn spend(&self, key: &str, cost: u64) -> Result<u64, u64> {
        let now = Instant::now();
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            // Forget full buckets: they hold no information.
            let (size, rate) = (self.size, self.rate);
            map.retain(|_, (p, at)| *p + now.duration_since(*at).as_secs_f64() * rate < size);
        }
        let (points, at) = map.entry(key.to_owned()).or_insert((self.size, now));
        let available =
            (*points + now.duration_since(*at).as_secs_f64() * self.rate).min(self.size);
        let cost = cost as f64;
        if cost > available {
            *points = available;
            *at = now;
            return Err(((cost - available) / self.rate).ceil().max(1.0) as u64);
        }
        *points = available - cost;
        *at = now;
        Ok(points.floor() as u64)
    }

    /// Points left in `key`'s bucket now.
    pub fn remaining(&self, key: &str) -> u64 {
        let now = Instant::now();
        let map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            Some((p, at)) => {
                (p + now.duration_since(*at).as_secs_f64() * self.rate).min(self.size) as u64
            }
            None => self.size as u64,
        }
    }
}

/// The extension factory: one [`QueryCost`] per request.
pub struct CostLimit;

impl ExtensionFactory for CostLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryCost {
            report: Mutex::new(None),
        })
    }
}

struct QueryCost {
    report: Mutex<Option<Value>>,
}

fn bucket_key(ctx: &ExtensionContext<'_>) -> String {
    match ctx.data_opt::<Principal>() {
        Some(Principal::Account { id, .. }) => id.clone(),
        Some(Principal::Operator) => "operator".into(),
        _ => format!(
            "ip:{}",
            ctx.data_opt::<Origin>()
                .and_then(|o| o.ip.clone())
                .unwrap_or_default()
        ),
    }
}

fn report(requested: usize, console: &Console, remaining: u64) -> Value {
    let mut budget = async_graphql::indexmap::IndexMap::new();
    budget.insert(
        async_graphql::Name::new("remaining"),
        Value::from(remaining),
    );
    budget.insert(
        async_graphql::Name::new("maximum"),
        Value::from(console.cfg.budget_points),
    );
    budget.insert(
        async_graphql::Name::new("restoreRate"),
        Value::from(console.cfg.budget_restore_per_second),
    );
    let mut cost = async_graphql::indexmap::IndexMap::new();
    cost.insert(
        async_graphql::Name::new("requestedQueryCost"),
        Value::from(requested as u64),
    );
    cost.insert(
        async_graphql::Name::new("maxQueryCost"),
        Value::from(console.cfg.max_cost),
    );
    cost.insert(async_graphql::Name::new("budget"), Value::Object(budget));
    Value::Object(cost)
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryCost {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        for e in &mut resp.errors {
            let ext = e.extensions.get_or_insert_with(Default::default);
            if ext.get("code").is_none() {
                ext.set("code", code::GRAPHQL_INVALID);
            }
        }
        if let Some(r) = self.report.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resp.extensions.insert("cost".into(), r);
        }
        resp
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let r = next.run(ctx).await?;
        let console = ctx.data_unchecked::<Console>();
        let key = bucket_key(ctx);
        if r.depth > console.cfg.max_depth as usize {
            return Err(vec![
                Fail::custom(
                    code::QUERY_TOO_DEEP,
                    format!(
                        "the query nests {} levels deep; at most {} are allowed",
                        r.depth, console.cfg.max_depth
                    ),
                )
                .into_server_error(),
            ]);
        }
        if r.complexity > console.cfg.max_cost as usize {
            *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report(
                r.complexity,
                console,
                console.budget.remaining(&key),
            ));
            return Err(vec![
                Fail::custom(
                    code::QUERY_TOO_COSTLY,
                    format!(
                        "the query costs {} points; at most {} are allowed: ask for fewer items (`first`) or fewer fields",
                        r.complexity, console.cfg.max_cost
                    ),
                )
                .into_server_error(),
            ]);
        }
        match console.budget.spend(&key, r.complexity as u64) {
            Ok(remaining) => {
                *self.report.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(report(r.complexity, console, remaining));
                Ok(r)
            }
            Err(wait) => {
                *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(report(
                    r.complexity,
                    console,
                    console.budget.remaining(&key),
                ));
                let mut f = Fail::new(
                    ErrorCode::RateLimited,
                    format!(
                        "the query costs {} points and your budget has fewer left; retry in {wait} s",
                        r.complexity
                    ),
                );
                f.retry_after = Some(wait);
                Err(vec![f.into_server_error()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_saturate_and_first_is_clamped() {
        assert_eq!(
            page_cost(Some(i32::MAX), 3, 1),
            301,
            "first counts as at most 100"
        );
        assert_eq!(page_cost(Some(i32::MIN), 3, 1), 4, "and at least 1");
        assert_eq!(page_cost(None, 3, 1), 61);
        assert_eq!(page_cost(Some(100), usize::MAX, 1), FIELD_COST_CAP);
        assert_eq!(times(20, usize::MAX), FIELD_COST_CAP);
        assert_eq!(plus(usize::MAX, 10), FIELD_COST_CAP);
    }

    #[test]
    fn a_bucket_runs_dry_and_refills() {
        let b = Budget::new(100, 1000);
        assert_eq!(b.spend("a", 60), Ok(40));
        assert!(b.spend("a", 60).is_err(), "only 40 left");
        assert_eq!(b.spend("b", 60), Ok(40), "buckets are per caller");
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(b.spend("a", 60).is_ok(), "refilled at 1000/s");
    }
}
