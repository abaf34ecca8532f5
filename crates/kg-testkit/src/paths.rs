//! Files the test environment points at: the model folder, the shared
//! server's PID file.

use crate::TestkitError;
use std::path::PathBuf;

/// The local embedding model folder (all-MiniLM-L6-v2 in the
/// sentence-transformers layout), from `KG_TEST_MODEL_DIR`.
///
/// Errs when the variable is unset or the folder lacks the weights or the
/// tokenizer, with how to get it.
pub fn model_dir() -> Result<PathBuf, TestkitError> {
    model_dir_from(std::env::var_os("KG_TEST_MODEL_DIR"))
}

fn model_dir_from(value: Option<std::ffi::OsString>) -> Result<PathBuf, TestkitError> {
    let dir = value
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or(TestkitError::ModelDirUnset)?;
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        if !dir.join(file).is_file() {
            return Err(TestkitError::ModelDirIncomplete {
                path: dir,
                missing: file,
            });
        }
    }
    Ok(dir)
}

/// The PID file of the shared test server (`KG_TEST_SERVER_PIDFILE`), set
/// when `cargo xtask test|it|ci` started it.
///
/// Other tests use that server at the same time: a test that kills or
/// restarts a server must use a [`crate::PrivateServer`] instead.
pub fn shared_server_pid_file() -> Result<PathBuf, TestkitError> {
    std::env::var_os("KG_TEST_SERVER_PIDFILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or(TestkitError::PidFileUnset)
}

/// xtask's cache directory: `$KG_CACHE_DIR`, or `~/.cache/kg` (as xtask does).
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KG_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("kg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_model_dir_says_how_to_get_one() {
        let error = model_dir_from(None).expect_err("unset");
        assert!(matches!(error, TestkitError::ModelDirUnset));
        assert!(error.to_string().contains("cargo xtask install"), "{error}");
        assert!(matches!(
            model_dir_from(Some("".into())),
            Err(TestkitError::ModelDirUnset)
        ));
    }

    #[test]
    fn a_model_dir_without_weights_is_refused() {
        let dir = std::env::temp_dir().join(format!("kg-testkit-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("tokenizer.json"), "{}").expect("write");
        let error = model_dir_from(Some(dir.clone().into())).expect_err("no weights");
        assert!(
            matches!(
                error,
                TestkitError::ModelDirIncomplete {
                    missing: "model.safetensors",
                    ..
                }
            ),
            "{error}"
        );
        for file in ["model.safetensors", "config.json"] {
            std::fs::write(dir.join(file), "x").expect("write");
        }
        assert_eq!(
            model_dir_from(Some(dir.clone().into())).expect("complete"),
            dir
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
