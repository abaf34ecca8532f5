//! The faults kg promises to survive, as one table.
//!
//! Each row names a fault, what kg does, the exit code of the `kg` command
//! (or `-` where the row is a library guarantee that the command inherits),
//! what shows that nothing was lost, and the test that proves it. The
//! tests live beside the code they exercise; this module checks that every
//! named test exists, and that `docs/reliability.md` holds exactly this
//! table (regenerate it with `KG_WRITE_RELIABILITY=1 cargo test -p kg-cli
//! --test fault_matrix`).

use std::path::{Path, PathBuf};

/// One fault kg survives.
struct Fault {
    fault: &'static str,
    behaviour: &'static str,
    exit: &'static str,
    nothing_lost: &'static str,
    /// `path/to/file.rs::test_name`, from the repository root.
    test: &'static str,
}

const FAULTS: &[Fault] = &[
    Fault {
        fault: "kg killed with SIGKILL mid-run",
        behaviour: "the next run resumes",
        exit: "0 on the re-run",
        nothing_lost: "zero repeated LLM calls, no duplicate node, graph equals an undisturbed run",
        test: "crates/kg-cli/tests/e2e.rs::a_run_killed_with_sigkill_resumes_without_repeating_calls_or_duplicating_nodes",
    },
    Fault {
        fault: "Ctrl-C mid-run",
        behaviour: "calls in flight finish and are cached, the summary is printed",
        exit: "1",
        nothing_lost: "every answer received is cached; the re-run makes only the missing calls",
        test: "crates/kg-cli/tests/e2e.rs::ctrl_c_finishes_in_flight_work_and_exits_with_the_summary",
    },
    Fault {
        fault: "Ctrl-C while a slow PDF is read",
        behaviour: "returns at once, without waiting for the PDF timeout",
        exit: "1",
        nothing_lost: "the PDF is reported unfinished and read by the next run",
        test: "crates/kg-cli/tests/e2e.rs::ctrl_c_while_a_slow_pdf_is_read_returns_and_reports_it_unfinished",
    },
    Fault {
        fault: "a panic in a stage task",
        behaviour: "the run stops with the panic message",
        exit: "1",
        nothing_lost: "no document is marked done",
        test: "crates/kg-cli/src/pipeline.rs::a_panic_in_the_store_ends_the_run_with_its_message",
    },
    Fault {
        fault: "Bolt server killed mid-write",
        behaviour: "transactions are retried once it is back",
        exit: "-",
        nothing_lost: "counts equal an undisturbed write",
        test: "crates/kg-store/tests/bolt_kill_restart.rs::bolt_server_killed_mid_write_then_rerun_matches_undisturbed_counts",
    },
    Fault {
        fault: "Bolt server down past the retries",
        behaviour: "batches are dead-lettered with their records",
        exit: "-",
        nothing_lost: "replaying the dead letters completes the graph",
        test: "crates/kg-store/tests/bolt_kill_restart.rs::bolt_server_down_past_retries_dead_letters_then_rerun_completes",
    },
    Fault {
        fault: "a batch the database refuses",
        behaviour: "rolled back whole, dead-lettered",
        exit: "-",
        nothing_lost: "the dead letter holds every record of the batch",
        test: "crates/kg-store/tests/embedded_store.rs::embedded_failed_batch_is_rolled_back_and_dead_lettered",
    },
    Fault {
        fault: "wrong Bolt password",
        behaviour: "fails before any work, naming the URI",
        exit: "1",
        nothing_lost: "nothing started; the password is never printed",
        test: "crates/kg-cli/tests/e2e_bolt.rs::kg_run_with_a_wrong_bolt_password_fails_naming_the_uri_not_the_password",
    },
    Fault {
        fault: "unknown Neo4j database",
        behaviour: "one line naming the database and the URI",
        exit: "1",
        nothing_lost: "nothing started",
        test: "crates/kg-store/tests/bolt_store.rs::bolt_unknown_database_fails_naming_it_and_the_uri",
    },
    Fault {
        fault: "data dir pointed at another or an emptied store",
        behaviour: "the run state forgets its done documents and says so",
        exit: "0",
        nothing_lost: "the full graph is written again, from the caches, with no LLM call",
        test: "crates/kg-cli/tests/e2e.rs::a_data_dir_whose_store_was_deleted_rebuilds_it_from_the_caches",
    },
    Fault {
        fault: "data dir switched from the embedded store to Neo4j",
        behaviour: "as above",
        exit: "0",
        nothing_lost: "Neo4j holds the same graph as the embedded store; no LLM call",
        test: "crates/kg-cli/tests/e2e_bolt.rs::a_data_dir_switched_to_bolt_writes_the_full_graph_there",
    },
    Fault {
        fault: "two runs on one data dir",
        behaviour: "the second waits for the first; with --no-wait it exits at once",
        exit: "1 with --no-wait",
        nothing_lost: "the first run is undisturbed",
        test: "crates/kg-cli/tests/e2e.rs::a_second_run_on_the_same_data_dir_refuses_with_no_wait",
    },
    Fault {
        fault: "two runs on one data dir a second apart, the file edited between (20 times)",
        behaviour: "the second waits for the first, then does only what the edit changed",
        exit: "0 for both",
        nothing_lost: "LLM calls at most one run's plus the chunks the edit made; the graph equals a fresh build of the last version",
        test: "crates/kg-cli/tests/e2e.rs::two_runs_a_second_apart_with_an_edit_between_cost_one_run_plus_the_edit",
    },
    Fault {
        fault: "a run holding the lock is killed",
        behaviour: "the kernel drops the lock",
        exit: "0 on the next run",
        nothing_lost: "the next run starts at once (--no-wait) and completes",
        test: "crates/kg-cli/tests/e2e.rs::a_lock_held_by_a_killed_run_is_free_at_once",
    },
    Fault {
        fault: "two machines (two data dirs) writing one Neo4j database",
        behaviour: "the store's writer lease lets one write at a time; the other waits, or with --no-wait exits naming the holder",
        exit: "1 with --no-wait",
        nothing_lost: "the graph equals a fresh build; a dead holder's lease expires (60 s), its own data dir takes it back at once",
        test: "crates/kg-cli/tests/e2e_bolt.rs::two_data_dirs_on_one_bolt_store_write_one_at_a_time",
    },
    Fault {
        fault: "LLM endpoint on a closed port",
        behaviour: "the breaker opens after a few connection failures",
        exit: "1, in seconds",
        nothing_lost: "the URL is named, never the key; a re-run asks each chunk once",
        test: "crates/kg-cli/tests/e2e.rs::an_llm_on_a_closed_port_ends_the_run_fast_and_a_rerun_completes",
    },
    Fault {
        fault: "embeddings endpoint refuses the key (401)",
        behaviour: "the run stops after at most 2 requests",
        exit: "1",
        nothing_lost: "the URL is named, never the key",
        test: "crates/kg-cli/tests/e2e.rs::a_rejected_embedding_key_stops_the_run_naming_the_url_not_the_key",
    },
    Fault {
        fault: "chat endpoint refuses the key (401)",
        behaviour: "extraction stops at the first call",
        exit: "1",
        nothing_lost: "no chunk is marked done",
        test: "crates/kg-extract/tests/fake_server.rs::a_wrong_key_stops_the_run_at_the_first_call",
    },
    Fault {
        fault: "429 with Retry-After",
        behaviour: "waits as told, lowers the concurrency",
        exit: "0",
        nothing_lost: "every chunk extracted",
        test: "crates/kg-extract/tests/fake_server.rs::rate_limited_calls_wait_for_retry_after",
    },
    Fault {
        fault: "429 on the embeddings endpoint",
        behaviour: "waits as told",
        exit: "0",
        nothing_lost: "every chunk embedded",
        test: "crates/kg-embed/tests/openai_fake.rs::rate_limits_are_retried_after_retry_after",
    },
    Fault {
        fault: "5xx, timeouts, cut connections, answers that are not JSON",
        behaviour: "retried, then set aside with a reason",
        exit: "3 if any is set aside",
        nothing_lost: "every chunk ends extracted or set aside; a re-run retries the set-asides",
        test: "crates/kg-extract/tests/fake_server.rs::every_chunk_ends_extracted_or_reported_under_each_fault",
    },
    Fault {
        fault: "a model that loops inside its JSON answer",
        behaviour: "the request carries a completion cap; the cut answer is repaired, retried shorter, or set aside",
        exit: "0, or 3 when set aside",
        nothing_lost: "the chunk ends repaired or set aside as truncated_answer",
        test: "crates/kg-extract/tests/fake_server.rs::a_looping_model_costs_at_most_the_cap_and_is_repaired",
    },
    Fault {
        fault: "hostile type names from the LLM",
        behaviour: "never reach an identifier",
        exit: "0",
        nothing_lost: "the entities are kept under a valid type",
        test: "crates/kg-extract/tests/fake_server.rs::hostile_type_names_never_reach_an_identifier",
    },
    Fault {
        fault: "Cypher and quotes in data",
        behaviour: "data goes in parameters only",
        exit: "-",
        nothing_lost: "read back byte for byte",
        test: "crates/kg-store/tests/bolt_store.rs::bolt_hostile_data_is_only_data",
    },
    Fault {
        fault: "an encrypted or corrupt PDF",
        behaviour: "set aside with its reason; the other files go on",
        exit: "3",
        nothing_lost: "the file is named in the summary and the dead letters",
        test: "crates/kg-cli/tests/e2e.rs::exit_codes_follow_the_contract",
    },
    Fault {
        fault: "a PDF engine that panics",
        behaviour: "the panic is caught; the fallback engine reads the file",
        exit: "0",
        nothing_lost: "the file's text is ingested",
        test: "crates/kg-ingest/tests/ingest_dir.rs::a_pdf_the_primary_engine_panics_on_is_read_by_the_fallback",
    },
    Fault {
        fault: "a CSV with bad rows",
        behaviour: "each bad row set aside by line; the rest goes on",
        exit: "3",
        nothing_lost: "every other row is a node or an edge",
        test: "crates/kg-ingest/tests/csv_graph.rs::bad_rows_are_reported_by_line_and_the_rest_goes_on",
    },
    Fault {
        fault: "a bad setting (value, range, unknown key)",
        behaviour: "refused before anything runs, naming the setting",
        exit: "2",
        nothing_lost: "nothing started",
        test: "crates/kg-cli/src/config.rs::out_of_range_concurrency_is_refused_before_anything_runs",
    },
    Fault {
        fault: "credentials in URLs and keys",
        behaviour: "masked in kg config, logs and the run state",
        exit: "0",
        nothing_lost: "-",
        test: "crates/kg-cli/src/config.rs::credentials_in_urls_are_masked_in_kg_config",
    },
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The table as Markdown.
fn render() -> String {
    let mut out = String::from(
        "| fault | what kg does | exit | nothing lost | test |\n|---|---|---|---|---|\n",
    );
    for f in FAULTS {
        let (file, name) = f.test.split_once("::").unwrap_or((f.test, ""));
        out.push_str(&format!(
            "| {} | {} | {} | {} | `{name}` ({file}) |\n",
            f.fault, f.behaviour, f.exit, f.nothing_lost
        ));
    }
    out
}

const BEGIN: &str = "<!-- fault-matrix:begin -->\n";
const END: &str = "<!-- fault-matrix:end -->";

#[test]
fn every_fault_names_a_test_that_exists() {
    for f in FAULTS {
        let (file, name) = f
            .test
            .split_once("::")
            .unwrap_or_else(|| panic!("{}: no `file::test`", f.test));
        let text =
            std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            text.contains(&format!("fn {name}(")),
            "{file} has no test `{name}` (row: {})",
            f.fault
        );
    }
}

#[test]
fn docs_reliability_md_holds_the_table() {
    let path = root().join("docs/reliability.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table = render();
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("{} lacks the fault-matrix markers", path.display());
    };
    let current = &doc[b + BEGIN.len()..e];
    if current != table && std::env::var_os("KG_WRITE_RELIABILITY").is_some() {
        let new = format!("{}{BEGIN}{table}{}", &doc[..b], &doc[e..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        current, table,
        "docs/reliability.md is not the table of tests/fault_matrix.rs: regenerate it with \
         KG_WRITE_RELIABILITY=1 cargo test -p kg-cli --test fault_matrix"
    );
}
