use kg_embed::{cosine, LocalEmbedder};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let reps: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1);
    let refj: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let texts: Vec<String> = serde_json::from_value(refj["texts"].clone()).unwrap();
    let refv: Vec<Vec<f32>> = serde_json::from_value(refj["vectors"].clone()).unwrap();
    let t0 = std::time::Instant::now();
    let m = LocalEmbedder::load(&dir).unwrap();
    eprintln!("load {:?}", t0.elapsed());
    let v = m.embed_blocking(&texts).unwrap();
    let mut worst = 1.0f32;
    for (a, b) in v.iter().zip(&refv) { worst = worst.min(cosine(a, b)); }
    println!("ref texts: min cosine {worst:.7}");
    let big: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&args[3]).unwrap()).unwrap();
    let bigref: Option<Vec<Vec<f32>>> = args.get(5).map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap());
    for _ in 0..reps {
        let t0 = std::time::Instant::now();
        let v = m.embed_blocking(&big).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        let mut worst = 1.0f32;
        if let Some(r) = &bigref { for (a, b) in v.iter().zip(r) { worst = worst.min(cosine(a, b)); } }
        println!("{} texts {:.3}s {:.2}/s (min cos vs old {worst:.7})", big.len(), dt, big.len() as f64 / dt);
    }
}
