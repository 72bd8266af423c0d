//! Small labelled tables bundled in the binary (see `host/assets/datasets/README.md` for their sources):
//! a header row of feature names ending in `class`, then one row per sample with the class by name.
//! Features come out z-scored per column.

use anyhow::{bail, ensure, Context};

use super::Dataset;

pub fn iris() -> anyhow::Result<Dataset> {
    parse_csv("iris", include_str!("../../assets/datasets/iris.csv"))
}

pub fn wine() -> anyhow::Result<Dataset> {
    parse_csv("wine", include_str!("../../assets/datasets/wine.csv"))
}

/// Parses such a table; classes are numbered in order of first appearance. Errors name the table,
/// the line and the field.
pub fn parse_csv(name: &str, text: &str) -> anyhow::Result<Dataset> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().with_context(|| format!("{name}: empty table"))?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    ensure!(columns.last() == Some(&"class"), "{name}: line 1: the last column must be `class`");
    let dim = columns.len() - 1;
    ensure!(dim > 0, "{name}: no feature columns");

    let (mut features, mut labels, mut class_names) = (Vec::new(), Vec::new(), Vec::<String>::new());
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns.len() {
            bail!("{name}: line {}: {} fields, expected {}", i + 1, fields.len(), columns.len());
        }
        for (field, column) in fields[..dim].iter().zip(&columns) {
            let value: f32 =
                field.parse().ok().filter(|v: &f32| v.is_finite()).with_context(|| {
                    format!("{name}: line {}: {column} = {field:?} is not a number", i + 1)
                })?;
            features.push(value);
        }
        let class = fields[dim];
        ensure!(!class.is_empty(), "{name}: line {}: empty class", i + 1);
        let index = class_names.iter().position(|c| c == class).unwrap_or_else(|| {
            class_names.push(class.to_string());
            class_names.len() - 1
        });
        labels.push(index as i64);
    }
    ensure!(!labels.is_empty(), "{name}: no rows");
    let mut dataset = Dataset {
        name: name.to_string(),
        features,
        dim,
        image_size: None,
        labels: Some(labels),
        class_names,
    };
    dataset.zscore();
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iris_has_150_samples_of_4_features_in_3_classes_of_50() {
        let d = iris().unwrap();
        assert_eq!((d.len(), d.dim), (150, 4));
        assert_eq!(d.class_names, ["setosa", "versicolor", "virginica"]);
        let labels = d.labels.unwrap();
        for c in 0..3 {
            assert_eq!(labels.iter().filter(|&&l| l == c).count(), 50);
        }
    }

    #[test]
    fn wine_has_178_samples_of_13_features_in_3_classes() {
        let d = wine().unwrap();
        assert_eq!((d.len(), d.dim), (178, 13));
        let labels = d.labels.unwrap();
        let counts: Vec<usize> = (0..3).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
        assert_eq!(counts, [59, 71, 48]);
    }

    #[test]
    fn features_come_out_z_scored() {
        let d = wine().unwrap();
        for j in 0..d.dim {
            let col: Vec<f64> = (0..d.len()).map(|i| d.row(i)[j] as f64).collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "column {j}: mean {mean}, var {var}");
        }
    }

    #[test]
    fn bad_rows_name_the_table_line_and_field() {
        let error = parse_csv("t", "a,b,class\n1,2,x\n1,oops,y\n").unwrap_err().to_string();
        assert_eq!(error, "t: line 3: b = \"oops\" is not a number");
        let error = parse_csv("t", "a,b,class\n1,2\n").unwrap_err().to_string();
        assert_eq!(error, "t: line 2: 2 fields, expected 3");
        let error = parse_csv("t", "a,b\n1,2\n").unwrap_err().to_string();
        assert_eq!(error, "t: line 1: the last column must be `class`");
    }
}
