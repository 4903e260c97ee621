//! Procedural macros behind the wafer Rust SDK. Use them through `wafer-sdk`:
//!
//! - `#[derive(Record)]` maps a struct onto a row schema: it writes the struct
//!   as a row (for deserializers and emitted outputs) and reads it from rows of
//!   any schema that has its fields, by name (for filters and processors).
//! - `__world_bindings!(world)` expands to the `wit-bindgen` bindings of one
//!   world of the wafer contract, with the WIT text embedded, so that a
//!   component carries the type information of exactly the world it
//!   implements.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, parse_macro_input};

/// The wafer WIT package, embedded so that guest crates need no path to it.
const WIT: &str = include_str!("../../../wit/wafer.wit");

/// Expands to the `wit-bindgen` bindings of one world (`deserializer`,
/// `filter`, `processor` or `co-processor`). Internal to the SDK's export
/// macros.
#[proc_macro]
pub fn __world_bindings(input: TokenStream) -> TokenStream {
    let world = parse_macro_input!(input as syn::Ident)
        .to_string()
        .replace('_', "-");
    let known = ["deserializer", "filter", "processor", "co-processor"];
    if !known.contains(&world.as_str()) {
        let msg = format!("unknown wafer world `{world}`; expected one of {known:?}");
        return quote!(compile_error!(#msg);).into();
    }
    let wit = LitStr::new(WIT, Span::call_site());
    let world = LitStr::new(&world, Span::call_site());
    quote! {
        ::wafer_sdk::__private::wit_bindgen::generate!({
            inline: #wit,
            world: #world,
            runtime_path: "::wafer_sdk::__private::wit_bindgen::rt",
            generate_all,
        });
    }
    .into()
}

/// Derives `wafer_sdk::Record` (write as a row) and `wafer_sdk::FromRow`
/// (read from a row by field name) for a struct with named fields.
///
/// Field attributes: `#[wafer(event_time)]` marks the int field holding the
/// event time; `#[wafer(rename = "name")]` sets the field's name in the schema.
#[proc_macro_derive(Record, attributes(wafer))]
pub fn derive_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match derive(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn derive(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            _ => {
                return Err(syn::Error::new_spanned(
                    name,
                    "derive(Record) needs a struct with named fields",
                ));
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                name,
                "derive(Record) needs a struct with named fields",
            ));
        }
    };

    let mut names = Vec::new();
    let mut idents = Vec::new();
    let mut types = Vec::new();
    let mut event_time: Option<String> = None;
    for f in fields {
        let ident = f
            .ident
            .clone()
            .ok_or_else(|| syn::Error::new_spanned(f, "unnamed field"))?;
        let mut field_name = ident.to_string();
        for attr in f.attrs.iter().filter(|a| a.path().is_ident("wafer")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("event_time") {
                    if event_time.is_some() {
                        return Err(meta.error("only one field can be the event time"));
                    }
                    event_time = Some(String::new());
                    Ok(())
                } else if meta.path.is_ident("rename") {
                    let lit: LitStr = meta.value()?.parse()?;
                    field_name = lit.value();
                    Ok(())
                } else {
                    Err(meta.error("expected `event_time` or `rename = \"...\"`"))
                }
            })?;
        }
        if event_time.as_deref() == Some("") {
            event_time = Some(field_name.clone());
        }
        if names.contains(&field_name) {
            return Err(syn::Error::new_spanned(
                f,
                format!("field name `{field_name}` is used twice"),
            ));
        }
        names.push(field_name);
        idents.push(ident);
        types.push(f.ty.clone());
    }

    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let lifetime = input.generics.lifetimes().next().map(|l| l.lifetime.clone());
    let row_lt = lifetime
        .clone()
        .unwrap_or_else(|| syn::Lifetime::new("'__wafer_row", Span::call_site()));
    let event_time = match &event_time {
        Some(n) => quote!(::core::option::Option::Some(#n)),
        None => quote!(::core::option::Option::None),
    };
    let idx: Vec<usize> = (0..idents.len()).collect();
    let n = idents.len();

    let from_row_generics = if lifetime.is_some() {
        quote!(#impl_generics)
    } else {
        let params = input.generics.params.iter();
        quote!(<'__wafer_row, #(#params),*>)
    };

    Ok(quote! {
        impl #impl_generics ::wafer_sdk::Record for #name #ty_generics #where_clause {
            fn schema() -> ::core::result::Result<::wafer_sdk::row::Schema, ::wafer_sdk::row::SchemaError> {
                ::wafer_sdk::row::Schema::new(
                    ::std::vec![
                        #(::wafer_sdk::row::Field {
                            name: ::std::string::String::from(#names),
                            ty: <#types as ::wafer_sdk::FieldValue>::TYPE,
                            nullable: <#types as ::wafer_sdk::FieldValue>::NULLABLE,
                        }),*
                    ],
                    #event_time,
                )
            }

            fn write(&self, row: &mut ::wafer_sdk::row::RowWriter<'_>) {
                #(::wafer_sdk::FieldValue::write(&self.#idents, row, #idx);)*
            }
        }

        impl #from_row_generics ::wafer_sdk::FromRow<#row_lt> for #name #ty_generics #where_clause {
            fn bind(schema: &::wafer_sdk::row::Schema) -> ::core::result::Result<::wafer_sdk::FieldMap, ::std::string::String> {
                let mut map = ::wafer_sdk::FieldMap::with_capacity(#n);
                #(map.bind::<#types>(schema, #names)?;)*
                ::core::result::Result::Ok(map)
            }

            fn read(row: &::wafer_sdk::row::Row<#row_lt>, map: &::wafer_sdk::FieldMap) -> ::core::result::Result<Self, ::std::string::String> {
                ::core::result::Result::Ok(Self {
                    #(#idents: <#types as ::wafer_sdk::ReadField<#row_lt>>::read(row, map.get(#idx), #names)?,)*
                })
            }
        }
    })
}
