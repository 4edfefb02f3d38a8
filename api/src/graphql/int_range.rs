//! `Int` arguments outside 32 bits are refused during validation, as the GraphQL specification
//! requires ("Values of Correct Type"; `Int` is a signed 32-bit integer).
//!
//! async-graphql validates an `Int` literal as any 64-bit integer and checks the 32-bit range
//! only when a resolver reads the argument. An argument of a field that is never resolved
//! (under a `null` parent: `job(id: "<unknown>") { history(first: 36425166201) { ... } }`) is
//! then accepted without an error, and the same request is refused or not depending on the
//! data. This extension checks every argument literal and every variable against its declared
//! type once the document is parsed, through lists, non-null types and input objects, so such a
//! request is always refused, before anything runs (code `BAD_USER_INPUT`).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{Name, Pos, ServerError, ServerResult, Value as ConstValue, Variables};

/// The extension: add it with `SchemaBuilder::extension`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntRange;

impl ExtensionFactory for IntRange {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(IntRange)
    }
}

#[async_trait::async_trait]
impl Extension for IntRange {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        check(&ctx.schema_env.registry, &document, variables)?;
        Ok(document)
    }
}

/// Checks every operation of `document`: its variables' values and its arguments' literals.
fn check(
    registry: &Registry,
    document: &ExecutableDocument,
    variables: &Variables,
) -> ServerResult<()> {
    let mut walk = Walk {
        registry,
        document,
        fragments_checked: HashSet::new(),
    };
    for (_, operation) in document.operations.iter() {
        for definition in &operation.node.variable_definitions {
            let name = &definition.node.name.node;
            if let Some(value) = variables.get(name) {
                let declared = definition.node.var_type.node.to_string();
                walk.value(
                    &declared,
                    value,
                    definition.pos,
                    &format!("variable \"${name}\""),
                )?;
            }
        }
        let root = match operation.node.ty {
            OperationType::Query => Some(registry.query_type.as_str()),
            OperationType::Mutation => registry.mutation_type.as_deref(),
            OperationType::Subscription => registry.subscription_type.as_deref(),
        };
        if let Some(root) = root {
            walk.selections(root, &operation.node.selection_set.node)?;
        }
    }
    Ok(())
}

struct Walk<'a> {
    registry: &'a Registry,
    document: &'a ExecutableDocument,
    /// A fragment's arguments are the same wherever it is spread: each is checked once (which
    /// also ends cycles, reported by validation, and keeps fan-out linear).
    fragments_checked: HashSet<&'a Name>,
}

impl<'a> Walk<'a> {
    /// The fields of `set`, selected on the type named `parent`, and everything below them.
    fn selections(&mut self, parent: &str, set: &'a SelectionSet) -> ServerResult<()> {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let Some(meta) = self
                        .registry
                        .types
                        .get(parent)
                        .and_then(|t| t.field_by_name(field.name.node.as_str()))
                    else {
                        continue; // unknown fields are validation's to report
                    };
                    for (name, value) in &field.arguments {
                        let Some(argument) = meta.args.get(name.node.as_str()) else {
                            continue;
                        };
                        // Variables are checked once, against their own declared types.
                        let literal = value
                            .node
                            .clone()
                            .into_const_with(|_| Ok::<_, Infallible>(ConstValue::Null));
                        let Ok(literal) = literal;
                        self.value(
                            &argument.ty,
                            &literal,
                            value.pos,
                            &format!("argument \"{}\"", name.node),
                        )?;
                    }
                    let child = MetaTypeName::concrete_typename(&meta.ty);
                    self.selections(child, &field.selection_set.node)?;
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    let on = fragment
                        .type_condition
                        .as_ref()
                        .map_or(parent, |c| c.node.on.node.as_str());
                    self.selections(on, &fragment.selection_set.node)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if !self.fragments_checked.insert(name) {
                        continue;
                    }
                    if let Some(fragment) = self.document.fragments.get(name) {
                        let on = fragment.node.type_condition.node.on.node.as_str();
                        self.selections(on, &fragment.node.selection_set.node)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `value` given for the GraphQL type `ty` (`Int!`, `[Int]`, `SubmitJobInput`, ...).
    fn value(&self, ty: &str, value: &ConstValue, pos: Pos, what: &str) -> ServerResult<()> {
        match MetaTypeName::create(ty) {
            MetaTypeName::NonNull(inner) => self.value(inner, value, pos, what),
            MetaTypeName::List(inner) => match value {
                ConstValue::List(items) => items
                    .iter()
                    .try_for_each(|item| self.value(inner, item, pos, what)),
                // A single value where a list is expected is a list of one.
                single => self.value(inner, single, pos, what),
            },
            MetaTypeName::Named("Int") => match value {
                ConstValue::Number(n) if n.as_i64().is_some_and(|i| i32::try_from(i).is_err()) => {
                    Err(ServerError::new(
                        format!(
                            "Invalid value for {what}, expected type \"Int\": only integers \
                             from {} to {} are accepted.",
                            i32::MIN,
                            i32::MAX
                        ),
                        Some(pos),
                    ))
                }
                _ => Ok(()),
            },
            MetaTypeName::Named(name) => match (self.registry.types.get(name), value) {
                (Some(MetaType::InputObject { input_fields, .. }), ConstValue::Object(fields)) => {
                    for (field, value) in fields {
                        if let Some(declared) = input_fields.get(field.as_str()) {
                            let what = format!("{what}, field \"{field}\"");
                            self.value(&declared.ty, value, pos, &what)?;
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, InputObject, Object, Schema};

    use super::*;

    #[derive(InputObject)]
    struct Page {
        first: Option<i32>,
        sizes: Option<Vec<i32>>,
    }

    struct Query;

    #[Object]
    impl Query {
        async fn item(&self, id: i32) -> Option<Item> {
            (id == 1).then_some(Item)
        }
        async fn big(&self, n: i64) -> i64 {
            n
        }
        async fn page(&self, page: Page) -> i32 {
            page.first.unwrap_or(0) + page.sizes.map_or(0, |s| s.len() as i32)
        }
    }

    struct Item;

    #[Object]
    impl Item {
        async fn children(&self, first: i32) -> i32 {
            first
        }
    }

    async fn errors(query: &str, variables: serde_json::Value) -> Vec<String> {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(IntRange)
            .finish();
        let request = async_graphql::Request::new(query).variables(Variables::from_json(variables));
        schema
            .execute(request)
            .await
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[tokio::test]
    async fn ints_beyond_32_bits_are_refused_even_where_nothing_resolves() {
        // Under a null parent: never resolved, refused all the same.
        let refused = errors(
            "{ item(id: 2) { children(first: 36425166201) } }",
            serde_json::json!({}),
        )
        .await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("argument \"first\""), "{refused:?}");
        for query in [
            "{ item(id: 2147483648) { children(first: 1) } }",
            "{ page(page: {first: -2147483649}) }",
            "{ page(page: {sizes: [1, 2, 4294967296]}) }",
            "{ ...F } fragment F on Query { item(id: 2) { children(first: 9999999999) } }",
            "{ ... on Query { item(id: 2) { children(first: 9999999999) } } }",
        ] {
            assert_eq!(
                errors(query, serde_json::json!({})).await.len(),
                1,
                "{query}"
            );
        }
        let refused = errors(
            "query($n: Int!, $p: Page!) { item(id: $n) { children(first: 1) } page(page: $p) }",
            serde_json::json!({"n": 1, "p": {"sizes": [3_000_000_000_i64]}}),
        )
        .await;
        assert!(refused[0].contains("variable \"$p\""), "{refused:?}");
    }

    #[tokio::test]
    async fn ints_within_32_bits_and_other_types_pass() {
        assert!(
            errors(
                "{ item(id: 2) { children(first: 2147483647) } }",
                serde_json::json!({})
            )
            .await
            .is_empty()
        );
        assert!(
            errors(
                "{ item(id: -2147483648) { children(first: 1) } }",
                serde_json::json!({})
            )
            .await
            .is_empty()
        );
        assert!(
            errors(
                "{ page(page: {first: 1, sizes: [1, 2]}) }",
                serde_json::json!({})
            )
            .await
            .is_empty()
        );
        // `big` takes a 64-bit integer (an `Int` too in async-graphql, refused when resolved,
        // never silently accepted).
        let big = errors("{ big(n: 1) }", serde_json::json!({})).await;
        assert!(big.is_empty(), "{big:?}");
        assert!(
            errors(
                "query($id: Int!) { item(id: $id) { children(first: 1) } }",
                serde_json::json!({"id": 1})
            )
            .await
            .is_empty()
        );
    }
}
