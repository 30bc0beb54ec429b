//! The CLI's text tables, by comfy-table: borderless, columns two spaces apart, numeric columns aligned right.

use comfy_table::{CellAlignment, Row, Table};

/// A table with `header`; `right` lists the (numeric) columns aligned right. Print it with [`Table::trim_fmt`]
/// (no trailing blanks). No terminal width is applied, so no cell is ever wrapped: scripts that grep the text see
/// each value whole, and a value wider than its column widens the column instead of shifting the row.
pub(crate) fn table(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(header.iter().copied());
    for i in 0..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_padding((0, if i + 1 == header.len() { 0 } else { 2 }));
            if right.contains(&i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    t
}

/// One row of a [`table`].
pub(crate) fn cells<const N: usize>(values: [String; N]) -> Row {
    Row::from(values)
}
