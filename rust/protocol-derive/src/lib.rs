//! `#[derive(EncodedLen)]` for the wire types of `eggs-protocol`.
//!
//! The derive mirrors bincode's own `Encode` derive in the protocol's fixed configuration:
//! a struct is its fields in order, an enum is a `u32` variant index followed by the
//! variant's fields. So the length of any wire value is the sum of its parts' lengths, and
//! nothing counts bytes by hand. The protocol's property tests check the result against the
//! real encoder for every message kind.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::{format_ident, quote};
use syn::{parse_macro_input, Data, DeriveInput, Fields};

#[proc_macro_derive(EncodedLen)]
pub fn derive_encoded_len(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "wire types are not generic",
        ));
    }
    let body = match &input.data {
        Data::Struct(s) => {
            let (pattern, sum) = fields_len(&s.fields);
            quote! { let #name #pattern = self; #sum }
        }
        Data::Enum(e) => {
            let arms = e.variants.iter().map(|v| {
                let variant = &v.ident;
                let (pattern, sum) = fields_len(&v.fields);
                // The variant index: a `u32` in the fixed-width configuration.
                quote! { #name::#variant #pattern => ::core::mem::size_of::<u32>() + #sum }
            });
            quote! {
                #[allow(unreachable_patterns)]
                match self { #(#arms,)* }
            }
        }
        Data::Union(u) => {
            return Err(syn::Error::new_spanned(
                u.union_token,
                "unions are not wire types",
            ))
        }
    };
    Ok(quote! {
        impl ::eggs_protocol::codec::EncodedLen for #name {
            #[allow(unused_variables)]
            fn encoded_len(&self) -> usize {
                #body
            }
        }
    })
}

/// A pattern binding every field, and the sum of their lengths.
fn fields_len(fields: &Fields) -> (Tokens, Tokens) {
    let binds: Vec<_> = (0..fields.len()).map(|i| format_ident!("f{i}")).collect();
    let sum = quote! {
        0usize #( + ::eggs_protocol::codec::EncodedLen::encoded_len(#binds) )*
    };
    let pattern = match fields {
        Fields::Named(named) => {
            let names = named.named.iter().map(|f| &f.ident);
            quote! { { #(#names: #binds),* } }
        }
        Fields::Unnamed(_) => quote! { ( #(#binds),* ) },
        Fields::Unit => quote! {},
    };
    (pattern, sum)
}
