//! stdac's metrics and k-means against scikit-learn's, from values that
//! `fixtures/make_sklearn_reference.py` computed with scikit-learn and SciPy (ACC: SciPy's
//! `linear_sum_assignment` on the contingency table). Metrics must agree to 1e-9.

use serde_json::Value;
use stdac::data::{self, Source};
use stdac::kmeans::{self, KMeansConfig};
use stdac::metrics::Scores;

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/sklearn_reference.json")).unwrap()
}

fn labels(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn assert_scores_match(ours: &Scores, theirs: &Value, what: &str) {
    assert_eq!(ours.n as u64, theirs["n"].as_u64().unwrap(), "{what}: n");
    for (name, value) in [
        ("acc", ours.acc),
        ("nmi", ours.nmi),
        ("ari", ours.ari),
        ("homogeneity", ours.homogeneity),
        ("completeness", ours.completeness),
        ("v_measure", ours.v_measure),
    ] {
        let expected = theirs[name].as_f64().unwrap();
        assert!((value - expected).abs() < 1e-9, "{what}: {name} = {value}, scikit-learn says {expected}");
    }
}

#[test]
fn every_metric_agrees_with_scikit_learn_to_1e_9() {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for (i, case) in cases.iter().enumerate() {
        let (truth, pred) = (labels(&case["truth"]), labels(&case["pred"]));
        let what = format!("case {i} ({} samples)", truth.len());
        assert_scores_match(&Scores::of(&truth, &pred), &case["sklearn"], &what);
    }
}

#[test]
fn k_means_on_iris_and_wine_reaches_scikit_learns_optimum() {
    let reference = reference();
    for (source, name) in [(Source::Iris, "iris"), (Source::Wine, "wine")] {
        let d = data::load(&source, None, None, None).unwrap();
        let fit = kmeans::fit(&d.features, d.dim, &KMeansConfig::new(3));
        let expected = reference["kmeans"][name]["inertia"].as_f64().unwrap();
        // Features are stored in f32 here, in f64 in scikit-learn.
        assert!(
            (fit.inertia - expected).abs() / expected < 1e-5,
            "{name}: inertia {} vs {expected}",
            fit.inertia
        );
        let pred: Vec<i64> = fit.labels.iter().map(|&l| l as i64).collect();
        let scores = Scores::of(d.labels.as_ref().unwrap(), &pred);
        assert_scores_match(&scores, &reference["kmeans"][name]["sklearn"], name);
    }
}
