//! What `#[plugin(...)]` turns an `impl Plugin for T` block into: the block with
//! `name`, `version`, `description` (and `is_service`) written from the declaration, and
//! `register_plugin!(T, metadata { ... })` with the same values, so the table the entry
//! point returns and the `.dynplug.meta` section come from one place.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{parse_quote, Expr, ImplItem, ItemImpl, LitStr};

use crate::args::{check_literal, Args, MAX_VALUE};
use crate::name;

/// The trait methods the attribute writes; an impl may not write them too.
const GENERATED: [(&str, &str); 4] = [
    ("name", "name = \"...\""),
    ("version", "version = \"...\""),
    ("description", "description = \"...\""),
    ("is_service", "service = true"),
];

/// What Cargo says about the package being compiled, the source of the defaults.
#[derive(Debug, Default)]
pub(crate) struct Package {
    /// `CARGO_PKG_NAME`.
    pub(crate) name: Option<String>,
    /// `CARGO_PKG_DESCRIPTION` (empty when the manifest has none).
    pub(crate) description: Option<String>,
}

impl Package {
    /// The package the compiler is building now (Cargo sets these for every crate).
    pub(crate) fn from_env() -> Package {
        Package {
            name: std::env::var("CARGO_PKG_NAME").ok(),
            description: std::env::var("CARGO_PKG_DESCRIPTION").ok(),
        }
    }
}

/// Expands the attribute; `root` is the path of the SDK in the plugin's crate.
pub(crate) fn expand(
    root: syn::Path,
    args: TokenStream,
    item: TokenStream,
    package: &Package,
) -> syn::Result<TokenStream> {
    let args = Args::parse(args)?;
    let mut block: ItemImpl = syn::parse2(item)?;
    check_block(&block)?;
    let name = plugin_name(args.name, package)?;
    let version = args
        .version
        .unwrap_or_else(|| parse_quote!(::core::env!("CARGO_PKG_VERSION")));
    let description = match args.description {
        Some(d) => d,
        None => package_description(package)?,
    };
    let service = args.service.into_iter().collect::<Vec<_>>();
    let schema = args.settings_schema.into_iter();
    let sandbox = args.sandbox.into_iter();

    block.items.extend::<[ImplItem; 3]>([
        parse_quote!(fn name(&self) -> &str { #name }),
        parse_quote!(fn version(&self) -> &str { #version }),
        parse_quote!(fn description(&self) -> &str { #description }),
    ]);
    for s in &service {
        block
            .items
            .push(parse_quote!(fn is_service(&self) -> bool { #s }));
    }
    let root = args.krate.unwrap_or(root);
    let ty = &block.self_ty;
    // The order of the optional keys is the order `register_plugin!` takes them in.
    Ok(quote! {
        #block
        #root::register_plugin!(#ty, metadata {
            name: #name,
            version: #version,
            description: #description,
            #(service: #service,)*
            #(settings_schema: #schema,)*
            #(sandbox: #sandbox,)*
        });
    })
}

/// Refuses anything but a plain `impl Plugin for Type` that leaves the generated
/// methods to the attribute.
fn check_block(block: &ItemImpl) -> syn::Result<()> {
    let is_plugin = matches!(&block.trait_, Some((None, path, _))
        if path.segments.last().is_some_and(|s| s.ident == "Plugin"));
    if !is_plugin {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "#[plugin] goes on the block `impl Plugin for YourType { ... }`",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "a plugin type cannot be generic: the library exports one concrete type",
        ));
    }
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        if let Some((method, key)) = GENERATED.iter().find(|(m, _)| f.sig.ident == m) {
            return Err(syn::Error::new_spanned(
                &f.sig.ident,
                format!(
                    "`fn {method}` is written by #[plugin] from its arguments, so that the \
                     plugin's table and its metadata section agree: remove it and write \
                     `{key}` in #[plugin(...)]"
                ),
            ));
        }
    }
    Ok(())
}

/// The declared name, or the package's; either must pass the name rule.
fn plugin_name(declared: Option<LitStr>, package: &Package) -> syn::Result<LitStr> {
    if let Some(name) = declared {
        return match name::check(&name.value()) {
            Ok(()) => Ok(name),
            Err(e) => Err(syn::Error::new(
                name.span(),
                format!("not a plugin name: {e}"),
            )),
        };
    }
    let Some(package_name) = &package.name else {
        return Err(syn::Error::new(
            Span::call_site(),
            "no `name` given and CARGO_PKG_NAME is not set: write `name = \"...\"`",
        ));
    };
    name::check(package_name).map_err(|e| {
        syn::Error::new(
            Span::call_site(),
            format!(
                "the plugin's name defaults to the package name, which is not a plugin \
                 name: {e}; write `name = \"...\"` in #[plugin(...)]"
            ),
        )
    })?;
    Ok(LitStr::new(package_name, Span::call_site()))
}

/// `env!("CARGO_PKG_DESCRIPTION")` when the package has a usable description.
fn package_description(package: &Package) -> syn::Result<Expr> {
    let description = package.description.as_deref().unwrap_or_default();
    if description.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "no `description` given and the package has none: write \
             `description = \"...\"` in #[plugin(...)] or set `description` in Cargo.toml",
        ));
    }
    check_literal("description", description, MAX_VALUE).map_err(|e| {
        syn::Error::new(Span::call_site(), format!("the package's description: {e}"))
    })?;
    Ok(parse_quote!(::core::env!("CARGO_PKG_DESCRIPTION")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, description: &str) -> Package {
        Package {
            name: Some(name.into()),
            description: Some(description.into()),
        }
    }

    fn run(args: TokenStream, item: TokenStream, package: &Package) -> Result<String, String> {
        expand(parse_quote!(::dynplug_sdk), args, item, package)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    fn echo() -> TokenStream {
        quote! {
            impl Plugin for Echo {
                fn execute(&self, input: &str) -> PluginResult<String> { Ok(input.into()) }
            }
        }
    }

    #[test]
    fn one_declaration_feeds_the_methods_and_the_section() {
        let out = run(
            quote!(
                name = "echo",
                description = "d",
                service = true,
                settings_schema = "{}"
            ),
            echo(),
            &package("dynplug-plugin-echo", ""),
        )
        .unwrap();
        for needle in [
            r#"fn name (& self) -> & str { "echo" }"#,
            r#"fn version (& self) -> & str { :: core :: env ! ("CARGO_PKG_VERSION") }"#,
            r#"fn description (& self) -> & str { "d" }"#,
            "fn is_service (& self) -> bool { true }",
            "fn execute",
            r#":: dynplug_sdk :: register_plugin ! (Echo , metadata { name : "echo" , version : :: core :: env ! ("CARGO_PKG_VERSION") , description : "d" , service : true , settings_schema : "{}" ,"#,
        ] {
            assert!(out.contains(needle), "{needle}\nnot in\n{out}");
        }
    }

    #[test]
    fn name_and_description_default_to_the_package() {
        let out = run(TokenStream::new(), echo(), &package("my-plugin", "says hi")).unwrap();
        assert!(out.contains(r#"metadata { name : "my-plugin""#), "{out}");
        assert!(
            out.contains(r#"description : :: core :: env ! ("CARGO_PKG_DESCRIPTION")"#),
            "{out}"
        );
        assert!(!out.contains("is_service"), "{out}");
    }

    #[test]
    fn a_package_name_that_is_no_plugin_name_is_a_compile_error() {
        for bad in ["My_Plugin", "plugin.rs", &"p".repeat(65)] {
            let e = run(quote!(description = "d"), echo(), &package(bad, "")).unwrap_err();
            assert!(
                e.contains("defaults to the package name") && e.contains("write `name"),
                "{e}"
            );
        }
        // Naming it fixes that.
        assert!(run(
            quote!(name = "ok", description = "d"),
            echo(),
            &package("My_Plugin", "")
        )
        .is_ok());
        let e = run(quote!(name = "Bad Name"), echo(), &package("x", "d")).unwrap_err();
        assert!(
            e.contains("not a plugin name") && e.contains("must start"),
            "{e}"
        );
        let e = run(quote!(description = "d"), echo(), &Package::default()).unwrap_err();
        assert!(e.contains("CARGO_PKG_NAME is not set"), "{e}");
    }

    #[test]
    fn a_missing_description_is_a_compile_error() {
        let e = run(quote!(name = "x"), echo(), &package("x", "")).unwrap_err();
        assert!(e.contains("no `description` given"), "{e}");
    }

    #[test]
    fn written_methods_and_other_blocks_are_refused() {
        for method in ["name", "version", "description", "is_service"] {
            let ident = syn::Ident::new(method, Span::call_site());
            let item = quote! { impl Plugin for Echo { fn #ident(&self) -> &str { "x" } } };
            let e = run(quote!(name = "echo"), item, &package("x", "d")).unwrap_err();
            assert!(
                e.contains(&format!("`fn {method}` is written by #[plugin]")),
                "{e}"
            );
        }
        for (item, needle) in [
            (
                quote! { impl Echo { fn new() -> Self { Echo } } },
                "goes on the block",
            ),
            (quote! { impl Other for Echo {} }, "goes on the block"),
            (
                quote! { impl<T> Plugin for Echo<T> {} },
                "cannot be generic",
            ),
            (quote! { struct Echo; }, "expected `impl`"),
        ] {
            let e = run(quote!(name = "echo"), item, &package("x", "d")).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_renamed_sdk_is_reached_through_crate() {
        let out = run(quote!(crate = ::sdk2), echo(), &package("x", "d")).unwrap();
        assert!(out.contains(":: sdk2 :: register_plugin !"), "{out}");
    }
}
