//! The export macros: each wires one type into one world's exports.
//!
//! Why the export side is generated in the author's crate and not here: `wit_bindgen` records
//! each world it generates in a `component-type` custom section, and when a `.wasm` is turned
//! into a component every such section that was linked in is merged into one world whose
//! exports must all be present. If this crate generated all three worlds, every extension
//! would have to export all three. So this crate generates only an imports-only world (whose
//! unused imports the component encoder drops), and each macro below generates exactly one
//! world in the crate that invokes it, sharing this crate's `types`, `log` and `remote`
//! bindings through `with:`.
//!
//! The macros name `::molecule_guest` by path (the `with:` option of `wit_bindgen` cannot take
//! `$crate`), so depend on this crate under its own name.

/// Exports `$ty`, an implementation of [`Classifier`](crate::Classifier), as the component's
/// `classify-packed` interface (world `packed-classifier` of `molecule:plugin@0.1.1`). Call it once, at module level, in a `cdylib` crate.
///
/// ```rust,standalone_crate
/// struct MyClassifier;
/// impl molecule_guest::Classifier for MyClassifier {}
/// molecule_guest::export_classifier!(MyClassifier);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_classifier {
    ($ty:ty) => {
        #[doc(hidden)]
        type __MoleculeGuestClassifier = $ty;

        #[doc(hidden)]
        mod __molecule_guest_classifier {
            $crate::__molecule_generate_world!({
                world: "packed-classifier",
                with: {
                    "molecule:plugin/types@0.1.1": ::molecule_guest::__private::wit::types,
                    "molecule:plugin/log@0.1.1": ::molecule_guest::__private::wit::log,
                },
            });

            #[derive(Debug)]
            struct Export;

            impl exports::molecule::plugin::classify_packed::Guest for Export {
                fn classify(
                    changes: $crate::__private::wit::types::PackedChanges,
                ) -> $crate::__private::wit::types::Reload {
                    $crate::__private::classify::<super::__MoleculeGuestClassifier>(changes)
                }
            }

            export!(Export);
        }
    };
}

/// Exports `$ty`, an implementation of [`RestartPolicy`](crate::RestartPolicy), as the
/// component's `decide` function. Call it once, at module level, in a `cdylib` crate.
///
/// ```rust,standalone_crate
/// struct MyPolicy;
/// impl molecule_guest::RestartPolicy for MyPolicy {}
/// molecule_guest::export_restart_policy!(MyPolicy);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_restart_policy {
    ($ty:ty) => {
        #[doc(hidden)]
        type __MoleculeGuestRestartPolicy = $ty;

        #[doc(hidden)]
        mod __molecule_guest_restart_policy {
            $crate::__molecule_generate_world!({
                world: "restart-policy",
                with: {
                    "molecule:plugin/types@0.1.1": ::molecule_guest::__private::wit::types,
                    "molecule:plugin/log@0.1.1": ::molecule_guest::__private::wit::log,
                },
            });

            #[derive(Debug)]
            struct Export;

            impl exports::molecule::plugin::restart::Guest for Export {
                fn decide(
                    workspace: $crate::__private::wit::types::WorkspaceInfo,
                    trigger: $crate::__private::wit::types::Trigger,
                ) -> $crate::__private::wit::types::Decision {
                    $crate::__private::decide::<super::__MoleculeGuestRestartPolicy>(workspace, trigger)
                }
            }

            export!(Export);
        }
    };
}

/// Exports `$ty`, an implementation of [`Resolver`](crate::Resolver), as the component's
/// `schemes`, `fetch` and `resolve-revision` functions. Call it once, at module level, in a
/// `cdylib` crate.
///
/// ```rust,standalone_crate
/// use molecule_guest::{FetchError, Fetched, Resolver, Source};
///
/// struct Nowhere;
/// impl Resolver for Nowhere {
///     fn schemes() -> &'static [&'static str] {
///         &["nowhere"]
///     }
///     fn fetch(source: &Source) -> Result<Fetched, FetchError> {
///         Err(FetchError::NotFound(format!("{source} leads nowhere")))
///     }
/// }
/// molecule_guest::export_resolver!(Nowhere);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_resolver {
    ($ty:ty) => {
        #[doc(hidden)]
        type __MoleculeGuestResolver = $ty;

        #[doc(hidden)]
        mod __molecule_guest_resolver {
            $crate::__molecule_generate_world!({
                world: "resolver",
                with: {
                    "molecule:plugin/types@0.1.1": ::molecule_guest::__private::wit::types,
                    "molecule:plugin/log@0.1.1": ::molecule_guest::__private::wit::log,
                    "molecule:plugin/remote@0.1.1": ::molecule_guest::__private::wit::remote,
                },
            });

            #[derive(Debug)]
            struct Export;

            impl exports::molecule::plugin::resolve::Guest for Export {
                fn schemes() -> ::std::vec::Vec<::std::string::String> {
                    $crate::__private::schemes::<super::__MoleculeGuestResolver>()
                }

                fn fetch(
                    source: $crate::__private::wit::types::Source,
                ) -> ::std::result::Result<
                    $crate::__private::wit::types::Fetched,
                    $crate::__private::wit::types::FetchError,
                > {
                    $crate::__private::fetch::<super::__MoleculeGuestResolver>(source)
                }

                fn resolve_revision(
                    source: $crate::__private::wit::types::Source,
                ) -> ::std::result::Result<::std::string::String, $crate::__private::wit::types::FetchError> {
                    $crate::__private::resolve_revision::<super::__MoleculeGuestResolver>(source)
                }
            }

            export!(Export);
        }
    };
}
