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
        vec![fixture("csv/airports.csv"), path.clone()],
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
    assert_eq!(summary.csv_rows, 3376 + 5366);
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

/// A mapping for a `cities.csv` of German cities, no encoding given.
const CITIES_MAPPING: &str = "[[csv]]\nfile = \"cities.csv\"\n[csv.node]\nlabel = \"City\"\nid_column = \"name\"\nproperties = { state = \"string\", population = \"int\" }\n";

#[test]
fn a_latin1_csv_arrives_intact_with_a_warning_naming_file_and_encoding() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    // As a spreadsheet on Windows exports it: ISO-8859-1 bytes (ü = 0xFC,
    // ö = 0xF6, ß = 0xDF), header included.
    let latin1: &[u8] = b"name,state,population\nM\xFCnchen,Bayern,1512491\nK\xF6ln,Nordrhein-Westfalen,1084831\nBerlin,Berlin,3878100\nGie\xDFen,Hessen,90131\n";
    let path = dir.path().join("cities.csv");
    std::fs::write(&path, latin1)?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, CITIES_MAPPING)?;

    let (records, summary) = run(vec![path.clone()], config_with(&mapping));
    let keys: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) => Some(n.key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec!["München", "Köln", "Berlin", "Gießen"]);
    assert!(!records.iter().any(|r| matches!(r, Record::Node(n)
        if n.key.contains('\u{FFFD}')
            || n.properties.values().any(|v| matches!(v, PropertyValue::String(s) if s.contains('\u{FFFD}'))))));
    assert_eq!(summary.set_aside_total(), 0);
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
    let warning = &summary.warnings[0];
    assert!(
        warning.contains(&path.display().to_string()),
        "names the file: {warning}"
    );
    assert!(
        warning.contains("Windows-1252"),
        "names the encoding: {warning}"
    );
    assert!(warning.contains("line 2"), "says where: {warning}");
    assert!(warning.contains("3 field(s)"), "counts: {warning}");

    // The same cities in UTF-8: same keys, no warning.
    std::fs::write(
        &path,
        "name,state,population\nMünchen,Bayern,1512491\nKöln,Nordrhein-Westfalen,1084831\nBerlin,Berlin,3878100\nGießen,Hessen,90131\n",
    )?;
    let (utf8_records, utf8_summary) = run(vec![path], config_with(&mapping));
    assert_eq!(utf8_records, records);
    assert!(
        utf8_summary.warnings.is_empty(),
        "{:?}",
        utf8_summary.warnings
    );
    Ok(())
}

#[test]
fn a_typo_in_the_mapping_is_an_error_naming_file_key_and_line() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("csv-mapping.toml");
    let text = std::fs::read_to_string(fixture("csv/mapping.toml"))?;
    // `lable` for `label`, in the [csv.node] table.
    let typo = text.replacen("label = \"Airport\"", "lable = \"Airport\"", 1);
    assert_ne!(typo, text);
    let line = typo
        .lines()
        .position(|l| l.starts_with("lable"))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no typo line"));
    std::fs::write(&path, &typo)?;
    match CsvMapping::from_file(&path) {
        Err(e @ IngestError::InvalidMapping { .. }) => {
            assert!(e.is_config(), "a configuration error: {e}");
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("`lable`"), "{message}");
            assert!(message.contains(&format!("line {line}")), "{message}");
        }
        other => panic!("expected InvalidMapping, got {other:?}"),
    }
    // The run refuses it before reading anything: the CLI never gets a config.
    Ok(())
}

fn mapping_error(text: &str) -> String {
    match CsvMapping::parse(text, Path::new("csv-mapping.toml")) {
        Err(e @ IngestError::InvalidMapping { .. }) => e.to_string(),
        other => panic!("expected InvalidMapping, got {other:?}"),
    }
}

#[test]
fn rewritten_names_warn_and_two_spellings_of_one_identifier_are_refused() -> std::io::Result<()> {
    // Three spellings of one label in one mapping: refused, naming two.
    let clash = "[[csv]]\nfile = \"a.csv\"\n[csv.node]\nlabel = \"A B\"\nid_column = \"id\"\n\n[[csv]]\nfile = \"b.csv\"\n[csv.node]\nlabel = \"A-B\"\nid_column = \"id\"\n\n[[csv]]\nfile = \"c.csv\"\n[csv.node]\nlabel = \"a.b\"\nid_column = \"id\"\n";
    let message = mapping_error(clash);
    assert!(message.contains("\"A B\""), "{message}");
    assert!(message.contains("\"A-B\""), "{message}");
    assert!(message.contains("\"AB\""), "{message}");
    assert!(message.contains("csv-mapping.toml"), "{message}");

    // Relationship types too, across entries.
    let rel_clash = "[[csv]]\nfile = \"a.csv\"\n[csv.node]\nlabel = \"City\"\nid_column = \"id\"\n[[csv.relations]]\ntype = \"located in\"\nto = { label = \"City\", column = \"in\" }\n\n[[csv]]\nfile = \"b.csv\"\n[csv.node]\nlabel = \"City\"\nid_column = \"id\"\n[[csv.relations]]\ntype = \"LocatedIn\"\nto = { label = \"City\", column = \"in\" }\n";
    let message = mapping_error(rel_clash);
    assert!(
        message.contains("\"located in\"") && message.contains("\"LocatedIn\""),
        "{message}"
    );

    // Two columns of one node that would write one property key.
    let key_clash = "[[csv]]\nfile = \"a.csv\"\n[csv.node]\nlabel = \"Station\"\nid_column = \"id\"\nproperties = { \"Lat Degrees\" = \"float\", lat_degrees = \"float\" }\n";
    let message = mapping_error(key_clash);
    assert!(
        message.contains("\"Lat Degrees\"") && message.contains("\"lat_degrees\""),
        "{message}"
    );

    // One spelling rewritten: accepted, with a warning naming the original
    // and the result, which the run repeats in its summary.
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("stations.csv");
    std::fs::write(
        &csv,
        "id,Lat Degrees,Station Name\nKIEL,54.3233,Kiel Hbf\nHH,53.5530,Hamburg Hbf\n",
    )?;
    let text = "[[csv]]\nfile = \"stations.csv\"\n[csv.node]\nlabel = \"train station\"\nid_column = \"id\"\nproperties = { \"Lat Degrees\" = \"float\", \"Station Name\" = \"string\" }\n";
    let mapping = match CsvMapping::parse(text, Path::new("csv-mapping.toml")) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    };
    let renamed: Vec<(&str, &str, &str)> = mapping
        .renamed
        .iter()
        .map(|r| (r.kind, r.original.as_str(), r.identifier.as_str()))
        .collect();
    assert_eq!(
        renamed,
        vec![
            ("label", "train station", "TrainStation"),
            ("property key", "Lat Degrees", "lat_degrees"),
            ("property key", "Station Name", "station_name"),
        ]
    );
    let config = IngestConfig {
        csv_mapping: Some(mapping),
        ..IngestConfig::default()
    };
    let (records, summary) = run(vec![csv], config);
    assert_eq!(summary.nodes, 2, "{:?}", set_asides(&records));
    assert_eq!(summary.warnings.len(), 3, "{:?}", summary.warnings);
    assert!(
        summary.warnings[0].contains("\"train station\"")
            && summary.warnings[0].contains("\"TrainStation\""),
        "{:?}",
        summary.warnings
    );

    // The same key spelled differently by two files' headers is one
    // property on purpose: not a clash.
    let two_files = "[[csv]]\nfile = \"a.csv\"\n[csv.node]\nlabel = \"City\"\nid_column = \"id\"\nproperties = { Population = \"int\" }\n\n[[csv]]\nfile = \"b.csv\"\n[csv.node]\nlabel = \"City\"\nid_column = \"id\"\nproperties = { population = \"int\" }\n";
    assert!(CsvMapping::parse(two_files, Path::new("m.toml")).is_ok());
    Ok(())
}

fn nodes_of(records: &[Record]) -> Vec<&kg_core::GraphNode> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) => Some(n),
            _ => None,
        })
        .collect()
}

#[test]
fn a_flight_to_an_unknown_airport_is_set_aside_and_makes_no_node() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    // The flights file sorts before the airports file here ("a-flights" <
    // "airports"): the run must still read the airports first.
    let flights = dir.path().join("a-flights.csv");
    let mut text = std::fs::read_to_string(fixture("csv/flights-airport.csv"))?;
    text.push_str(
        "ATL,XQZ,12
",
    ); // line 5368: no airport XQZ
    std::fs::write(&flights, &text)?;
    let airports = dir.path().join("airports.csv");
    std::fs::copy(fixture("csv/airports.csv"), &airports)?;
    let mapping = dir.path().join("csv-mapping.toml");
    let mapping_text = std::fs::read_to_string(fixture("csv/mapping.toml"))?
        .replace("flights-airport.csv", "a-flights.csv");
    std::fs::write(&mapping, mapping_text)?;

    let (records, summary) = run(vec![dir.path().to_path_buf()], config_with(&mapping));
    let bad = set_asides(&records);
    assert_eq!(bad.len(), 1, "{bad:?}");
    let source = flights.canonicalize()?.display().to_string();
    assert_eq!(bad[0].item, format!("{source}:5368"));
    assert_eq!(bad[0].reason.code(), "unknown_endpoint");
    for part in [
        source.as_str(),
        ":5368",
        "Airport",
        "\"XQZ\"",
        "destination",
    ] {
        assert!(bad[0].detail.contains(part), "{part} in {}", bad[0].detail);
    }
    assert_eq!((summary.nodes, summary.edges), (3376, 5366));
    assert_eq!(
        summary.set_aside_by_reason.get("unknown_endpoint"),
        Some(&1)
    );
    let airport = Label::new("Airport").unwrap_or_else(|e| panic!("{e}"));
    let xqz = NodeId::new(&airport, "XQZ");
    assert!(!nodes_of(&records)
        .iter()
        .any(|n| n.id == xqz || n.key == "XQZ"));
    assert!(!records
        .iter()
        .any(|r| matches!(r, Record::Edge(e) if e.to.id == xqz || e.from.id == xqz)));
    // Every node precedes every edge: the airports were read first.
    let last_node = records.iter().rposition(|r| matches!(r, Record::Node(_)));
    let first_edge = records.iter().position(|r| matches!(r, Record::Edge(_)));
    assert!(last_node < first_edge, "{last_node:?} {first_edge:?}");

    // The flights without any airport file: every route is set aside, and
    // the detail says no Airport file was read.
    let (alone, alone_summary) = run(vec![flights.clone()], config_with(&mapping));
    assert_eq!(alone_summary.edges, 0);
    assert!(nodes_of(&alone).is_empty());
    assert_eq!(
        alone_summary.set_aside_by_reason.get("unknown_endpoint"),
        Some(&5367)
    );
    let first = set_asides(&alone)[0].detail.clone();
    assert!(
        first.contains("no Airport node file (airports.csv) was read"),
        "{first}"
    );

    // ... unless the mapping says those airports come from elsewhere.
    let external = std::fs::read_to_string(&mapping)?
        .replace(
            "column = \"origin\" }",
            "column = \"origin\", external = true }",
        )
        .replace(
            "column = \"destination\" }",
            "column = \"destination\", external = true }",
        );
    std::fs::write(&mapping, external)?;
    let (_, external_summary) = run(vec![flights], config_with(&mapping));
    assert_eq!(external_summary.edges, 5367);
    assert_eq!(external_summary.set_aside_total(), 0);
    Ok(())
}

#[test]
fn a_relation_to_a_label_no_entry_maps_is_refused_unless_external() {
    let text = "[[csv]]\nfile = \"flights.csv\"\n[[csv.relations]]\ntype = \"FLIES_TO\"\nfrom = { label = \"Airport\", column = \"origin\" }\nto = { label = \"Airport\", column = \"destination\" }\n";
    let message = mapping_error(text);
    assert!(
        message.contains("Airport") && message.contains("external = true"),
        "{message}"
    );
    let external = text.replace("\" }", "\", external = true }");
    assert!(CsvMapping::parse(&external, Path::new("m.toml")).is_ok());
}

#[test]
fn a_forward_reference_within_one_file_is_known() -> std::io::Result<()> {
    // Each employee reports to another of the same file, some of them on a
    // later line; one reports to someone who is not there.
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("staff.csv");
    std::fs::write(
        &csv,
        "id,name,manager\nE2,Grace Hopper,E1\nE1,Ada Lovelace,E1\nE3,Alan Turing,E2\nE4,Kurt Gödel,E9\n",
    )?;
    let mapping = dir.path().join("m.toml");
    std::fs::write(
        &mapping,
        "[[csv]]\nfile = \"staff.csv\"\n[csv.node]\nlabel = \"Employee\"\nid_column = \"id\"\nproperties = { name = \"string\" }\n[[csv.relations]]\ntype = \"REPORTS_TO\"\nto = { label = \"Employee\", column = \"manager\" }\n",
    )?;
    let (records, summary) = run(vec![csv], config_with(&mapping));
    assert_eq!((summary.nodes, summary.edges), (4, 3));
    let bad = set_asides(&records);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].reason.code(), "unknown_endpoint");
    assert!(bad[0].detail.contains("\"E9\""), "{}", bad[0].detail);
    assert!(bad[0].item.ends_with(":5"), "{}", bad[0].item);
    Ok(())
}
