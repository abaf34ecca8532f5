//! Pairwise precision and recall of resolution on the labelled set in
//! `eval/resolution/names.tsv` (run with `--nocapture` for the table).

use std::collections::BTreeMap;

use kg_resolve::eval::{parse_labelled, predict, score_by_type, table};
use kg_resolve::ResolveConfig;

fn labelled_set() -> Vec<kg_resolve::eval::Labelled> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../eval/resolution/names.tsv"
    );
    let text = std::fs::read_to_string(path).expect("the labelled set is in the repository");
    parse_labelled(&text).expect("the labelled set parses")
}

#[test]
fn labelled_set_is_big_enough() {
    let set = labelled_set();
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &set {
        *groups.entry(l.group.as_str()).or_default() += 1;
    }
    let true_groups = groups.values().filter(|n| **n >= 2).count();
    let singletons = groups.values().filter(|n| **n == 1).count();
    assert!(set.len() >= 150, "{} names", set.len());
    assert!(true_groups >= 40, "{true_groups} groups of variants");
    assert!(singletons >= 30, "{singletons} hard negatives");
    let types: std::collections::BTreeSet<&str> =
        set.iter().map(|l| l.entity_type.as_str()).collect();
    assert!(types.len() >= 4, "{types:?}");
}

#[test]
fn resolution_meets_the_precision_and_recall_floors() {
    let set = labelled_set();
    let predicted = predict(&set, &ResolveConfig::default()).unwrap();
    let scores = score_by_type(&set, &predicted);
    println!("{}", table(&scores));
    // What went wrong, for whoever reads the output.
    for i in 0..set.len() {
        for j in i + 1..set.len() {
            let (t, p) = (set[i].group == set[j].group, predicted[i] == predicted[j]);
            if t != p {
                println!(
                    "{}: {:?} / {:?}",
                    if p { "FP" } else { "FN" },
                    set[i].name,
                    set[j].name
                );
            }
        }
    }
    let all = scores["all"];
    assert!(all.precision() >= 0.98, "precision {:.3}", all.precision());
    assert!(all.recall() >= 0.85, "recall {:.3}", all.recall());
}

#[test]
fn exact_keys_alone_do_much_worse() {
    // The baseline the fuzzy step improves on: no merges beyond the key.
    let set = labelled_set();
    let config = ResolveConfig {
        threshold: 2.0,
        vector_margin: 0.0,
        ..ResolveConfig::default()
    };
    let exact = score_by_type(&set, &predict(&set, &config).unwrap())["all"];
    let fuzzy = score_by_type(&set, &predict(&set, &ResolveConfig::default()).unwrap())["all"];
    println!(
        "exact key: P {:.3} R {:.3}",
        exact.precision(),
        exact.recall()
    );
    assert!(fuzzy.recall() > exact.recall() + 0.2);
}
