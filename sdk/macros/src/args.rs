//! The attribute's arguments, `#[plugin(name = "...", version = "...", ...)]`, read and
//! checked as far as the compiler lets a macro see them.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, ExprLit, Lit, LitBool, LitStr};

/// The largest value of most metadata records the host reads (its `MAX_VALUE`).
pub(crate) const MAX_VALUE: usize = 4096;
/// The largest metadata section the host reads (its `MAX_SECTION`); bounds the schema.
const MAX_SECTION: usize = 256 * 1024;

/// The macros a record's value may be written with besides a string literal: the ones
/// `concat!` accepts, so the value can go into the section at compile time.
const VALUE_MACROS: [&str; 3] = ["env", "concat", "include_str"];

/// What the attribute says; `None` where it says nothing.
#[derive(Default)]
pub(crate) struct Args {
    /// `name = "..."`: a literal, checked against the name rule.
    pub(crate) name: Option<LitStr>,
    /// `version = ...`.
    pub(crate) version: Option<Expr>,
    /// `description = ...`.
    pub(crate) description: Option<Expr>,
    /// `settings_schema = ...`: a JSON Schema for the plugin's settings.
    pub(crate) settings_schema: Option<Expr>,
    /// `sandbox = ...`: what an isolated worker of the plugin needs.
    pub(crate) sandbox: Option<Expr>,
    /// `service = true|false`.
    pub(crate) service: Option<LitBool>,
    /// `crate = path`: where the SDK is, for a crate that renamed it.
    pub(crate) krate: Option<syn::Path>,
}

impl Args {
    /// Reads the attribute's arguments.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let mut args = Args::default();
        syn::meta::parser(|meta| args.field(&meta)).parse2(tokens)?;
        Ok(args)
    }

    fn field(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        match key.as_str() {
            "name" => {
                let name: LitStr = meta.value()?.parse()?;
                check_literal("name", &name.value(), MAX_VALUE)
                    .map_err(|e| syn::Error::new(name.span(), e))?;
                set(&mut self.name, name, meta, &key)
            }
            "version" => set(&mut self.version, text(meta, &key, MAX_VALUE)?, meta, &key),
            "description" => set(
                &mut self.description,
                text(meta, &key, MAX_VALUE)?,
                meta,
                &key,
            ),
            "settings_schema" => set(
                &mut self.settings_schema,
                text(meta, &key, MAX_SECTION)?,
                meta,
                &key,
            ),
            "sandbox" => set(&mut self.sandbox, text(meta, &key, MAX_VALUE)?, meta, &key),
            "service" => set(&mut self.service, meta.value()?.parse()?, meta, &key),
            "crate" => set(&mut self.krate, meta.value()?.parse()?, meta, &key),
            _ => Err(meta.error(
                "unknown key; #[plugin] takes name, version, description, settings_schema, \
                 service, sandbox and crate",
            )),
        }
    }
}

/// Stores `value` in `slot`, refusing a key given twice.
fn set<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta<'_>,
    key: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format!("`{key}` is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// A record's value: a string literal (checked here) or one of [`VALUE_MACROS`].
fn text(meta: &ParseNestedMeta<'_>, key: &str, limit: usize) -> syn::Result<Expr> {
    let expr: Expr = meta.value()?.parse()?;
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => check_literal(key, &s.value(), limit).map_err(|e| syn::Error::new(s.span(), e))?,
        Expr::Macro(m)
            if m.mac
                .path
                .segments
                .last()
                .is_some_and(|s| VALUE_MACROS.contains(&s.ident.to_string().as_str())) => {}
        _ => {
            return Err(syn::Error::new_spanned(
                &expr,
                format!(
                    "`{key}` must be a string literal, `env!(..)`, `concat!(..)` or \
                     `include_str!(..)`: it is written into the library when it is compiled"
                ),
            ))
        }
    }
    Ok(expr)
}

/// What the host's metadata reader would refuse in a value known at compile time.
pub(crate) fn check_literal(key: &str, value: &str, limit: usize) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!(
            "`{key}` contains a NUL character, which would end its record"
        ));
    }
    if value.len() > limit {
        return Err(format!(
            "`{key}` is {} bytes long; hosts read at most {limit}",
            value.len()
        ));
    }
    if key == "version" && value.is_empty() {
        return Err("`version` is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn error(tokens: TokenStream) -> String {
        match Args::parse(tokens) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_key_is_read() {
        let a = Args::parse(quote! {
            name = "echo", version = env!("CARGO_PKG_VERSION"), description = "d",
            settings_schema = r#"{"type": "object"}"#, service = true, sandbox = "net",
            crate = ::my_sdk,
        })
        .unwrap();
        assert_eq!(a.name.unwrap().value(), "echo");
        assert!(a.service.unwrap().value);
        assert!(a.version.is_some() && a.description.is_some());
        assert!(a.settings_schema.is_some() && a.sandbox.is_some());
        assert!(a.krate.is_some());
        let none = Args::parse(TokenStream::new()).unwrap();
        assert!(none.name.is_none() && none.version.is_none() && none.service.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        for (tokens, needle) in [
            (quote! { nme = "x" }, "unknown key"),
            (quote! { name = "a", name = "b" }, "`name` is given twice"),
            (quote! { name = echo }, "expected string literal"),
            (quote! { version = VERSION }, "must be a string literal"),
            (
                quote! { description = format!("x") },
                "must be a string literal",
            ),
            (quote! { version = "" }, "`version` is empty"),
            (quote! { description = "a\0b" }, "NUL"),
            (quote! { service = "yes" }, "expected boolean literal"),
        ] {
            let e = error(tokens.clone());
            assert!(e.contains(needle), "{tokens}: {e}");
        }
        let long = "d".repeat(MAX_VALUE + 1);
        assert!(error(quote! { description = #long }).contains("4097 bytes long"));
        // The schema may use the whole section.
        let schema = "s".repeat(MAX_VALUE * 2);
        assert!(Args::parse(quote! { settings_schema = #schema }).is_ok());
    }
}
