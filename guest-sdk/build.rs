//! Bakes the absolute path of the frozen WIT package into a macro that the export macros
//! expand in the author's crate, so `wit_bindgen::generate!` there finds the same files as the
//! SDK does no matter where the author's crate lives.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wit_dir = manifest_dir.join("../wit/v0.1.1");
    let wit_dir = fs::canonicalize(&wit_dir)
        .unwrap_or_else(|e| panic!("the WIT package {} must exist: {e}", wit_dir.display()));
    let wit_dir = wit_dir.to_str().expect("the WIT path is UTF-8");
    println!("cargo::rerun-if-changed={wit_dir}");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("generate_world.rs");
    let source = format!(
        r#"/// Expands `wit_bindgen::generate!` for one world of `molecule:plugin@0.1.1` in the caller's
/// crate. Only the export macros use it.
#[doc(hidden)]
#[macro_export]
macro_rules! __molecule_generate_world {{
    ({{ $($opts:tt)* }}) => {{
        ::molecule_guest::__private::wit_bindgen::generate!({{
            path: {wit_dir:?},
            runtime_path: "::molecule_guest::__private::wit_bindgen::rt",
            $($opts)*
        }});
    }};
}}
"#
    );
    fs::write(&out, source).expect("writing generate_world.rs into OUT_DIR");
}
