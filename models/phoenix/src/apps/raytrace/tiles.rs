//! Image tiles as virtual IDs, their state as Phoenix application data, and the PNG output.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::scene::Scene;
use crate::protocol::data::IdData;
use crate::protocol::ids::{Id, IdRange};

/// How the image is cut into square tiles; tile `i` (row-major) is virtual ID `i`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TileGrid {
    pub width: u32,
    pub height: u32,
    pub tile: u32,
}

impl TileGrid {
    pub fn cols(&self) -> u32 {
        self.width.div_ceil(self.tile)
    }
    pub fn rows(&self) -> u32 {
        self.height.div_ceil(self.tile)
    }
    pub fn count(&self) -> u64 {
        u64::from(self.cols()) * u64::from(self.rows())
    }
    /// (x0, y0, w, h) of tile `id`.
    pub fn rect(&self, id: Id) -> (u32, u32, u32, u32) {
        let (c, r) = (
            (id % u64::from(self.cols())) as u32,
            (id / u64::from(self.cols())) as u32,
        );
        let (x0, y0) = (c * self.tile, r * self.tile);
        (
            x0,
            y0,
            self.tile.min(self.width - x0),
            self.tile.min(self.height - y0),
        )
    }
    pub fn pixels(&self, id: Id) -> u64 {
        let (_, _, w, h) = self.rect(id);
        u64::from(w) * u64::from(h)
    }
}

/// Renders row `row` of tile `id` (0 = its top row), appending its RGB bytes to `rgb`; returns the
/// intersection tests it took.
pub fn render_tile_row(scene: &Scene, grid: &TileGrid, id: Id, row: u32, rgb: &mut Vec<u8>) -> u64 {
    let (x0, y0, w, _) = grid.rect(id);
    let mut tests = 0;
    for x in x0..x0 + w {
        let (p, t) = scene.pixel(x, y0 + row);
        rgb.extend_from_slice(&p);
        tests += t;
    }
    tests
}

/// Renders one tile: its RGB bytes (row-major) and the intersection tests it took.
pub fn render_tile(scene: &Scene, grid: &TileGrid, id: Id) -> (Vec<u8>, u64) {
    let (_, _, w, h) = grid.rect(id);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    let tests = (0..h)
        .map(|row| render_tile_row(scene, grid, id, row, &mut rgb))
        .sum();
    (rgb, tests)
}

/// The whole image rendered on one machine, pixel by pixel: the reference.
pub fn render_sequential(scene: &Scene) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((scene.width * scene.height * 3) as usize);
    for y in 0..scene.height {
        for x in 0..scene.width {
            rgb.extend_from_slice(&scene.pixel(x, y).0);
        }
    }
    rgb
}

/// Puts rendered tiles together; `None` if a tile is missing or has the wrong size.
pub fn assemble(grid: &TileGrid, tiles: &BTreeMap<Id, Vec<u8>>) -> Option<Vec<u8>> {
    let mut img = vec![0u8; (grid.width * grid.height * 3) as usize];
    for id in 0..grid.count() {
        let t = tiles.get(&id)?;
        let (x0, y0, w, h) = grid.rect(id);
        if t.len() != (w * h * 3) as usize {
            return None;
        }
        for row in 0..h {
            let src = &t[(row * w * 3) as usize..((row + 1) * w * 3) as usize];
            let at = (((y0 + row) * grid.width + x0) * 3) as usize;
            img[at..at + src.len()].copy_from_slice(src);
        }
    }
    Some(img)
}

/// Encodes RGB bytes as a PNG file.
pub fn png(width: u32, height: u32, rgb: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(rgb)?;
    }
    Ok(out)
}

/// A tile's state on its owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TileState {
    Todo,
    Done(Vec<u8>),
}

/// The tiles a machine owns: Phoenix moves them (rendered or not) with their IDs.
#[derive(Debug)]
pub struct Tiles {
    pub grid: TileGrid,
    tiles: BTreeMap<Id, TileState>,
    /// The unrendered ones among `tiles`: the work loop asks for the next one per tile, and a
    /// scan of every owned tile each time made a large image quadratic (~6 % of the CPU at 30,000
    /// tiles).
    todo: BTreeSet<Id>,
    /// The tile being rendered: never given away.
    pub busy: Option<Id>,
}

impl Tiles {
    pub fn new(grid: TileGrid) -> Self {
        Tiles {
            grid,
            tiles: BTreeMap::new(),
            todo: BTreeSet::new(),
            busy: None,
        }
    }
    /// Marks the owned `range` as not yet rendered (initial assignment).
    pub fn add_todo(&mut self, range: IdRange) {
        for id in range.start..range.end {
            self.tiles.insert(id, TileState::Todo);
            self.todo.insert(id);
        }
    }
    /// Every owned tile with its state.
    pub fn tiles(&self) -> &BTreeMap<Id, TileState> {
        &self.tiles
    }
    /// The owned tiles not yet rendered, in ID order.
    pub fn todo(&self) -> &BTreeSet<Id> {
        &self.todo
    }
    /// Stores the pixels of owned, unrendered tile `id`; false (and nothing changes) otherwise.
    pub fn set_done(&mut self, id: Id, px: Vec<u8>) -> bool {
        if !self.todo.remove(&id) {
            return false;
        }
        self.tiles.insert(id, TileState::Done(px));
        true
    }
    /// The upper half of the unrendered tiles (the busy one excepted), as ranges: what a machine
    /// gives away.
    pub fn half_of_todo(&self) -> Vec<IdRange> {
        let todo: Vec<Id> = self
            .todo
            .iter()
            .copied()
            .filter(|&id| Some(id) != self.busy)
            .collect();
        ranges_of(&todo[todo.len() - todo.len() / 2..])
    }
    /// Takes `part` in (already checked): the todo index follows the states.
    fn insert(&mut self, part: Vec<(Id, TileState)>) {
        for (id, s) in part {
            if s == TileState::Todo {
                self.todo.insert(id);
            } else {
                self.todo.remove(&id);
            }
            self.tiles.insert(id, s);
        }
    }
}

/// Consecutive IDs merged into ranges.
pub fn ranges_of(ids: &[Id]) -> Vec<IdRange> {
    let mut out: Vec<IdRange> = Vec::new();
    for &id in ids {
        match out.last_mut() {
            Some(r) if r.end == id => r.end += 1,
            _ => out.push(IdRange::new(id, id + 1)),
        }
    }
    out
}

impl IdData for Tiles {
    /// Tiles of a crashed machine come back unrendered: the image is recomputed, not restored.
    fn lost(&mut self, range: IdRange) {
        self.add_todo(range);
    }
    fn pack(&mut self, range: IdRange) -> Vec<u8> {
        let keys: Vec<Id> = self
            .tiles
            .range(range.start..range.end)
            .map(|(&k, _)| k)
            .collect();
        let part: Vec<(Id, TileState)> = keys
            .into_iter()
            .filter_map(|k| {
                self.todo.remove(&k);
                self.tiles.remove(&k).map(|s| (k, s))
            })
            .collect();
        postcard::to_allocvec(&part).expect("serialising plain data")
    }
    fn unpack(&mut self, range: IdRange, bytes: &[u8]) -> Result<(), String> {
        let part: Vec<(Id, TileState)> = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        for (id, s) in &part {
            if !range.contains(*id) || *id >= self.grid.count() {
                return Err(format!("tile {id} outside {range}"));
            }
            if let TileState::Done(px) = s {
                if px.len() as u64 != self.grid.pixels(*id) * 3 {
                    return Err(format!("tile {id} has {} bytes", px.len()));
                }
            }
        }
        self.insert(part);
        Ok(())
    }
    /// A joiner gets half of the unrendered tiles: that is what balances the work.
    fn donate(&self, _owned: &[IdRange]) -> Vec<IdRange> {
        self.half_of_todo()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_assemble_to_the_sequential_image() {
        let scene = Scene::standard(37, 21);
        let grid = TileGrid {
            width: 37,
            height: 21,
            tile: 8,
        };
        let tiles: BTreeMap<Id, Vec<u8>> = (0..grid.count())
            .map(|id| (id, render_tile(&scene, &grid, id).0))
            .collect();
        assert_eq!(assemble(&grid, &tiles).unwrap(), render_sequential(&scene));
        let png = png(37, 21, &render_sequential(&scene)).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn lost_tiles_are_rendered_again() {
        let grid = TileGrid {
            width: 16,
            height: 16,
            tile: 4,
        };
        let mut t = Tiles::new(grid);
        t.lost(IdRange::new(4, 8));
        assert_eq!(
            t.todo().iter().copied().collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
    }

    #[test]
    fn tile_data_travels_and_rejects_bad_input() {
        let grid = TileGrid {
            width: 16,
            height: 16,
            tile: 4,
        };
        let mut a = Tiles::new(grid);
        a.add_todo(IdRange::new(0, 16));
        assert!(a.set_done(3, vec![7; 48]));
        assert!(!a.set_done(3, vec![7; 48]), "already rendered");
        assert!(!a.set_done(20, vec![7; 48]), "not owned");
        assert_eq!(
            a.half_of_todo(),
            vec![IdRange::new(9, 16)],
            "15 unrendered: the upper 7"
        );
        let bytes = a.pack(IdRange::new(2, 6));
        let mut b = Tiles::new(grid);
        b.unpack(IdRange::new(2, 6), &bytes).unwrap();
        assert_eq!(b.tiles().len(), 4);
        assert_eq!(b.tiles()[&3], TileState::Done(vec![7; 48]));
        assert_eq!(b.todo().len(), 3, "the index follows the unpacked states");
        assert_eq!(a.todo().len(), 12, "packed tiles leave the index");
        assert!(
            b.unpack(IdRange::new(0, 1), &bytes).is_err(),
            "IDs outside the range"
        );
        assert!(b.unpack(IdRange::new(0, 16), &[0xff, 0xff]).is_err());
        assert_eq!(
            ranges_of(&[1, 2, 3, 7, 9, 10]),
            vec![IdRange::new(1, 4), IdRange::new(7, 8), IdRange::new(9, 11)]
        );
    }
}
