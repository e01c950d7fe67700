//! Reference extraction: which variables, locals and resource attributes an
//! expression names, and where, found by walking hcl-edit's syntax tree.
//! References become dependency edges and decide which values are unknown
//! at plan time. Function calls are collected too, so unknown functions can
//! be reported before evaluation.

use std::ops::Range;

use hcl_edit::Span;
use hcl_edit::expr::{Expression, ForExpr, FuncCall, Traversal, TraversalOperator};
use hcl_edit::visit::{self, Visit};

/// What a reference points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefTarget {
    /// `var.NAME`
    Var(String),
    /// `local.NAME`
    Local(String),
    /// `berth.ATTR` (`berth.env`)
    Berth(String),
    /// `TYPE.NAME[.ATTR]`
    Resource {
        /// Resource type.
        type_name: String,
        /// Resource name.
        name: String,
        /// The first attribute named, if any.
        attr: Option<String>,
    },
    /// Any other root name (an undeclared variable, unless it is a resource
    /// type the engine knows).
    Other(String),
}

impl RefTarget {
    /// The graph node this reference depends on: `var.x`, `local.x` or
    /// `TYPE.NAME`.
    pub fn node(&self) -> Option<String> {
        match self {
            Self::Var(n) => Some(format!("var.{n}")),
            Self::Local(n) => Some(format!("local.{n}")),
            Self::Resource {
                type_name, name, ..
            } => Some(format!("{type_name}.{name}")),
            Self::Berth(_) | Self::Other(_) => None,
        }
    }
}

/// A reference and its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    /// The target.
    pub target: RefTarget,
    /// Where it stands.
    pub span: Range<usize>,
}

/// A function call and the span of its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The function name.
    pub name: String,
    /// Where the call stands.
    pub span: Range<usize>,
}

/// Collects the references and function calls of `expr`.
pub fn collect(expr: &Expression) -> (Vec<Ref>, Vec<Call>) {
    let mut collector = Collector::default();
    collector.visit_expr(expr);
    (collector.refs, collector.calls)
}

#[derive(Default)]
struct Collector {
    refs: Vec<Ref>,
    calls: Vec<Call>,
    bound: Vec<String>,
}

impl Collector {
    fn root(&mut self, root: &str, attrs: &[String], span: Range<usize>) {
        if self.bound.iter().any(|b| b == root) {
            return;
        }
        let target = match (root, attrs) {
            ("var", [name, ..]) => RefTarget::Var(name.clone()),
            ("local", [name, ..]) => RefTarget::Local(name.clone()),
            ("berth", [attr, ..]) => RefTarget::Berth(attr.clone()),
            (root, [name, rest @ ..]) if root.contains('_') => RefTarget::Resource {
                type_name: root.to_owned(),
                name: name.clone(),
                attr: rest.first().cloned(),
            },
            (root, _) => RefTarget::Other(root.to_owned()),
        };
        self.refs.push(Ref { target, span });
    }
}

impl Visit for Collector {
    fn visit_expr(&mut self, node: &Expression) {
        if let Expression::Variable(var) = node {
            let span = var.span().unwrap_or(0..0);
            self.root(var.as_str(), &[], span);
            return;
        }
        visit::visit_expr(self, node);
    }

    fn visit_traversal(&mut self, node: &Traversal) {
        if let Expression::Variable(var) = &node.expr {
            let attrs: Vec<String> = node
                .operators
                .iter()
                .map_while(|op| match &**op {
                    TraversalOperator::GetAttr(ident) => Some(ident.as_str().to_owned()),
                    _ => None,
                })
                .collect();
            let span = node.span().unwrap_or(0..0);
            self.root(var.as_str(), &attrs, span);
            // Index expressions may hold references of their own.
            for op in &node.operators {
                if let TraversalOperator::Index(expr) = &**op {
                    self.visit_expr(expr);
                }
            }
            return;
        }
        visit::visit_traversal(self, node);
    }

    fn visit_func_call(&mut self, node: &FuncCall) {
        let span = node.name.name.span().unwrap_or(0..0);
        self.calls.push(Call {
            name: node.name.name.as_str().to_owned(),
            span,
        });
        visit::visit_func_call(self, node);
    }

    fn visit_for_expr(&mut self, node: &ForExpr) {
        self.visit_expr(&node.intro.collection_expr);
        let mut names = vec![node.intro.value_var.as_str().to_owned()];
        if let Some(key) = &node.intro.key_var {
            names.push(key.as_str().to_owned());
        }
        let depth = self.bound.len();
        self.bound.extend(names);
        if let Some(key_expr) = &node.key_expr {
            self.visit_expr(key_expr);
        }
        self.visit_expr(&node.value_expr);
        if let Some(cond) = &node.cond {
            self.visit_expr(&cond.expr);
        }
        self.bound.truncate(depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs_of(src: &str) -> Vec<RefTarget> {
        let body = hcl_edit::parser::parse_body(&format!("x = {src}\n")).expect("parses");
        let attr = body.get_attribute("x").expect("attr");
        collect(&attr.value)
            .0
            .into_iter()
            .map(|r| r.target)
            .collect()
    }

    #[test]
    fn finds_resource_var_and_local_references() {
        let refs = refs_of(r#""${var.a}-${local.b}-${docker_image.app.image_id}""#);
        assert_eq!(
            refs,
            vec![
                RefTarget::Var("a".into()),
                RefTarget::Local("b".into()),
                RefTarget::Resource {
                    type_name: "docker_image".into(),
                    name: "app".into(),
                    attr: Some("image_id".into())
                }
            ]
        );
    }

    #[test]
    fn for_expression_iterators_are_not_references() {
        let refs = refs_of("[for p in var.ports : p.x if p.y > local.min]");
        assert_eq!(
            refs,
            vec![
                RefTarget::Var("ports".into()),
                RefTarget::Local("min".into())
            ]
        );
    }

    #[test]
    fn unknown_roots_are_kept_for_diagnostics() {
        assert_eq!(refs_of("foo"), vec![RefTarget::Other("foo".into())]);
    }
}
