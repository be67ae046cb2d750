//! Command-line arguments `--key=value`.

use super::Entry;
use crate::origin::Origin;

/// Parses `--key=value` arguments; anything else (including `--flag` without `=`) is ignored.
pub(crate) fn parse<I, S>(args: I) -> Vec<Entry>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    args.into_iter()
        .filter_map(|a| {
            let a = a.as_ref();
            let rest = a.strip_prefix("--")?;
            let (k, v) = rest.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| Entry::new(k, v, Origin::Argument(k.to_owned())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_key_value_options_count() {
        let e = super::parse(["prog", "--a.b=1", "--flag", "-x=2", "--c=x=y", "--=v"]);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.raw_key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(got, vec![("a.b", "1"), ("c", "x=y")]);
        assert_eq!(e[0].origin.to_string(), "command-line argument --a.b");
    }
}
