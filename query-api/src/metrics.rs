//! GraphQL request latency by operation, and the subscriptions open now, counted into the
//! process's metrics (`shoal_infra::telemetry::metrics`) by a schema extension: add
//! [`GraphqlMetrics`] to the schema that is served.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextSubscribe,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;
use shoal_infra::telemetry::metrics::metrics;

/// The schema extension (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct GraphqlMetrics;

impl ExtensionFactory for GraphqlMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerRequest::default())
    }
}

/// What parsing told about the request's operation: its type and its name in the document.
#[derive(Debug, Default)]
struct PerRequest {
    operation: Mutex<Option<(&'static str, Option<String>)>>,
}

fn kind(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

#[async_trait::async_trait]
impl Extension for PerRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let operation = match &document.operations {
            DocumentOperations::Single(op) => Some((kind(op.node.ty), None)),
            DocumentOperations::Multiple(ops) if ops.len() == 1 => ops
                .iter()
                .next()
                .map(|(name, op)| (kind(op.node.ty), Some(name.to_string()))),
            DocumentOperations::Multiple(_) => None,
        };
        if let Ok(mut slot) = self.operation.lock() {
            *slot = operation;
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let began = Instant::now();
        let response = next.run(ctx, operation_name).await;
        let parsed = self.operation.lock().ok().and_then(|slot| slot.clone());
        let (ty, name_in_document) = parsed.unwrap_or(("query", None));
        metrics().graphql_request(
            operation_name.or(name_in_document.as_deref()),
            ty,
            began.elapsed(),
        );
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let open = metrics().subscription_opened();
        next.run(ctx, stream)
            .map(move |response| {
                let _open = &open;
                response
            })
            .boxed()
    }
}
