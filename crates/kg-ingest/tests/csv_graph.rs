//! CSV → graph through a mapping, on real data: the vega-datasets airport
//! graph (3,376 airports, 5,366 routes) and the csv crate's example files
//! (Latin-1, headerless with a malformed row, ':'-separated).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::fixture;
use kg_core::{Label, NodeId, PropertyKey, PropertyValue, Record, SetAside};
use kg_ingest::{ingest_to_vec, CsvMapping, IngestConfig, IngestError, IngestSummary};

fn config_with(mapping: &Path) -> IngestConfig {
    let csv_mapping = match CsvMapping::from_file(mapping) {
        Ok(m) => m,
        Err(e) => panic!("mapping {}: {e}", mapping.display()),
    };
    IngestConfig {
        csv_mapping: Some(csv_mapping),
        ..IngestConfig::default()
    }
}

fn run(paths: Vec<PathBuf>, config: IngestConfig) -> (Vec<Record>, IngestSummary) {
    match ingest_to_vec(paths, config) {
        Ok(out) => out,
        Err(e) => panic!("ingest failed: {e}"),
    }
}

fn set_asides(records: &[Record]) -> Vec<&SetAside> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::SetAside(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn key(k: &str) -> PropertyKey {
    PropertyKey::new(k).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn airports_and_flights_make_the_known_graph() {
    let airports = fixture("csv/airports.csv");
    let flights = fixture("csv/flights-airport.csv");
    let (records, summary) = run(
        vec![airports.clone(), flights.clone()],
        config_with(&fixture("csv/mapping.toml")),
    );
    let airport = Label::new("Airport").unwrap_or_else(|e| panic!("{e}"));
    let nodes: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) => Some(n),
            _ => None,
        })
        .collect();
    let edges: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Edge(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(nodes.len(), 3376);
    assert!(nodes.iter().all(|n| n.label == airport));
    assert_eq!(edges.len(), 5366);
    assert!(
        set_asides(&records).is_empty(),
        "{:?}",
        set_asides(&records)
    );
    assert_eq!(
        (summary.nodes, summary.edges, summary.csv_rows),
        (3376, 5366, 3376 + 5366)
    );
    assert_eq!(summary.files_read, 2);
    assert_eq!(summary.set_aside_total(), 0);

    // One airport, typed properties, line number of its row.
    let atl = nodes
        .iter()
        .find(|n| n.key == "ATL")
        .unwrap_or_else(|| panic!("no ATL"));
    assert_eq!(atl.id, NodeId::new(&airport, "ATL"));
    assert_eq!(
        atl.properties.get(&key("name")),
        Some(&PropertyValue::String(
            "William B Hartsfield-Atlanta Intl".into()
        ))
    );
    assert_eq!(
        atl.properties.get(&key("latitude")),
        Some(&PropertyValue::Float(33.64044444))
    );
    assert!(
        !atl.properties.contains_key(&key("iata")),
        "unmapped column became a property"
    );
    assert_eq!(nodes[0].key, "00M");
    assert_eq!(nodes[0].line, 2, "first data row is line 2");

    // Every route joins two mapped airports, by the same ids.
    let ids: BTreeSet<_> = nodes.iter().map(|n| &n.id).collect();
    assert!(edges
        .iter()
        .all(|e| ids.contains(&e.from.id) && ids.contains(&e.to.id)));
    let first = edges[0];
    assert_eq!(first.rel_type.as_str(), "FLIES_TO");
    assert_eq!(first.from.id, NodeId::new(&airport, "ABE"));
    assert_eq!(first.to.id, NodeId::new(&airport, "ATL"));
    assert_eq!(
        first.properties.get(&key("count")),
        Some(&PropertyValue::Int(853))
    );
    assert_eq!(first.line, 2);
}

#[test]
fn bad_rows_are_reported_by_line_and_the_rest_goes_on() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let original = std::fs::read_to_string(fixture("csv/flights-airport.csv"))?;
    let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
    // Lines are 1-based with the header on line 1; corrupt three data rows.
    lines[9] = "ABQ,DAL".into(); // line 10: a field missing
    lines[99] = "ATL,BOS,many".into(); // line 100: count is not a number
    lines[999] = ",DEN,12".into(); // line 1000: empty origin key
    let path = dir.path().join("flights-airport.csv");
    std::fs::write(&path, lines.join("\n") + "\n")?;

    let (records, summary) = run(
        vec![path.clone()],
        config_with(&fixture("csv/mapping.toml")),
    );
    let bad = set_asides(&records);
    let source = path.display().to_string();
    let items: Vec<&str> = bad.iter().map(|s| s.item.as_str()).collect();
    assert_eq!(
        items,
        vec![
            format!("{source}:10"),
            format!("{source}:100"),
            format!("{source}:1000")
        ]
    );
    assert!(bad.iter().all(|s| s.reason.code() == "bad_csv_row"));
    assert!(bad[0].detail.contains("2 fields"), "{}", bad[0].detail);
    assert!(bad[1].detail.contains("\"many\""), "{}", bad[1].detail);
    assert!(bad[2].detail.contains("origin"), "{}", bad[2].detail);
    assert_eq!(summary.edges, 5366 - 3);
    assert_eq!(summary.set_aside_by_reason.get("bad_csv_row"), Some(&3));
    assert_eq!(summary.csv_rows, 5366);
    Ok(())
}

#[test]
fn utf8_bom_is_skipped() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(fixture("csv/airports.csv"))?);
    let path = dir.path().join("airports.csv");
    std::fs::write(&path, bytes)?;
    let (records, summary) = run(vec![path], config_with(&fixture("csv/mapping.toml")));
    assert_eq!(summary.nodes, 3376, "{:?}", set_asides(&records).first());
    Ok(())
}

#[test]
fn csv_crate_examples_latin1_headerless_malformed_and_colon() {
    let dir = fixture("csv/csv-crate");
    let (records, summary) = run(
        vec![
            dir.join("uspop-latin1.csv"),
            dir.join("strange.csv"),
            dir.join("smallpop-colon.csv"),
        ],
        config_with(&dir.join("mapping.toml")),
    );
    let nodes: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) => Some(n),
            _ => None,
        })
        .collect();
    // Latin-1: byte 0xD5 is "Õ"; an empty Population cell is a missing property.
    let oakman = nodes
        .iter()
        .find(|n| n.key.ends_with("akman"))
        .unwrap_or_else(|| panic!("no Oakman"));
    assert_eq!(oakman.key, "Õakman");
    assert_eq!(oakman.line, 4);
    assert!(!oakman.properties.contains_key(&key("Population")));
    let cities = nodes.iter().filter(|n| n.label.as_str() == "City").count();
    assert_eq!(cities, 100 + 10);
    // strange.csv: ';', no header, a comment line, and a one-field row.
    let wrestlers: Vec<_> = nodes
        .iter()
        .filter(|n| n.label.as_str() == "Wrestler")
        .collect();
    assert_eq!(wrestlers.len(), 5);
    assert_eq!(wrestlers[0].key, "\"Hacksaw\" Jim Duggan");
    assert_eq!(
        wrestlers[0].properties.get(&key("debut")),
        Some(&PropertyValue::Int(1987))
    );
    let bad = set_asides(&records);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(
        bad[0].item,
        format!("{}:4", dir.join("strange.csv").display())
    );
    assert_eq!(bad[0].reason.code(), "bad_csv_row");
    // smallpop-colon.csv: relations from the row's node to a Region.
    let located = records
        .iter()
        .filter(|r| matches!(r, Record::Edge(e) if e.rel_type.as_str() == "LOCATED_IN"))
        .count();
    assert_eq!(located, 10);
    assert_eq!(summary.set_aside_total(), 1);
}

#[test]
fn unmapped_csv_is_set_aside_and_bad_mappings_are_errors() -> std::io::Result<()> {
    let (records, summary) = run(vec![fixture("csv/airports.csv")], IngestConfig::default());
    let bad = set_asides(&records);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason.code(), "csv_not_mapped");
    assert_eq!(summary.nodes, 0);

    let origin = Path::new("mapping.toml");
    let bad_label =
        "[[csv]]\nfile = \"a.csv\"\n[csv.node]\nlabel = \"Air`port\"\nid_column = \"iata\"\n";
    assert!(matches!(
        CsvMapping::parse(bad_label, origin),
        Err(IngestError::InvalidMapping { .. })
    ));
    let bad_type = "[[csv]]\nfile = \"a.csv\"\n[csv.node]\nlabel = \"A\"\nid_column = \"x\"\nproperties = { y = \"decimal\" }\n";
    assert!(matches!(
        CsvMapping::parse(bad_type, origin),
        Err(IngestError::InvalidMapping { .. })
    ));
    let nothing = "[[csv]]\nfile = \"a.csv\"\n";
    assert!(matches!(
        CsvMapping::parse(nothing, origin),
        Err(IngestError::InvalidMapping { .. })
    ));

    // A mapping naming a column the file lacks sets the file aside.
    let dir = tempfile::tempdir()?;
    let mapping = dir.path().join("m.toml");
    std::fs::write(
        &mapping,
        "[[csv]]\nfile = \"airports.csv\"\n[csv.node]\nlabel = \"Airport\"\nid_column = \"icao\"\n",
    )?;
    let (records, _) = run(vec![fixture("csv/airports.csv")], config_with(&mapping));
    let bad = set_asides(&records);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].reason.code(), "csv_mapping_mismatch");
    assert!(bad[0].detail.contains("icao"));
    Ok(())
}
