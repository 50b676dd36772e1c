//! Where a [`super::ClexLayer`] keeps its inference θ table (docs/CLEX.md §4.3).
//!
//! The table is solved once, on the first forward that needs t > 1, from the layer's weights,
//! and shared by clones of the layer (they hold the same weights). It is never re-checked
//! against the weights: instead every module operation that can give the layer new weights
//! drops it. Those are `map` (burn's optimizers step through it, and so do dtype casts) and
//! `load_record`; the layer's parameters are private, so nothing else can replace them. A
//! forward therefore never reads the weights back from the device to key the table.

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};

use burn::module::{
    AutodiffModule, Content, Devices, EmptyRecord, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::backend::{AutodiffBackend, Backend};

use super::theta::ThetaTable;

/// The layer's θ table, once solved. A module field with no parameters and no record, so
/// that burn's module operations reach it (a `#[module(skip)]` field would be copied
/// through them unchanged).
pub struct ThetaSlot<B: Backend> {
    table: Arc<OnceLock<Arc<ThetaTable>>>,
    backend: PhantomData<fn() -> B>,
}

impl<B: Backend> ThetaSlot<B> {
    /// The table, solving it with `solve` if this slot is empty.
    pub(crate) fn get_or_solve(&self, solve: impl FnOnce() -> ThetaTable) -> Arc<ThetaTable> {
        self.table.get_or_init(|| Arc::new(solve())).clone()
    }

    /// True once the table has been solved (for tests of invalidation).
    pub fn is_filled(&self) -> bool {
        self.table.get().is_some()
    }

    fn share<B2: Backend>(&self) -> ThetaSlot<B2> {
        ThetaSlot { table: self.table.clone(), backend: PhantomData }
    }
}

impl<B: Backend> Default for ThetaSlot<B> {
    fn default() -> Self {
        ThetaSlot { table: Arc::default(), backend: PhantomData }
    }
}

impl<B: Backend> Clone for ThetaSlot<B> {
    fn clone(&self) -> Self {
        self.share()
    }
}

impl<B: Backend> std::fmt::Debug for ThetaSlot<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Module summaries print every field; the table itself is not worth a page.
        write!(f, "ThetaSlot({})", if self.is_filled() { "solved" } else { "empty" })
    }
}

impl<B: Backend> Module<B> for ThetaSlot<B> {
    type Record = EmptyRecord;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        devices
    }

    // Moving the weights to another device keeps their values, so the table stays valid.
    fn fork(self, _device: &B::Device) -> Self {
        self
    }

    fn to_device(self, _device: &B::Device) -> Self {
        self
    }

    fn visit<V: ModuleVisitor<B>>(&self, _visitor: &mut V) {}

    /// The weights are being mapped (an optimizer step, a cast): the table is stale.
    fn map<M: ModuleMapper<B>>(self, _mapper: &mut M) -> Self {
        Self::default()
    }

    /// New weights are being loaded: the table is stale.
    fn load_record(self, _record: Self::Record) -> Self {
        Self::default()
    }

    fn into_record(self) -> Self::Record {
        EmptyRecord::new()
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for ThetaSlot<B> {
    type InnerModule = ThetaSlot<B::InnerBackend>;

    // The same weights without the autodiff graph: the same table.
    fn valid(&self) -> Self::InnerModule {
        self.share()
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        module.share()
    }
}

impl<B: Backend> ModuleDisplayDefault for ThetaSlot<B> {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&format!("{self:?}")).optional()
    }
}

impl<B: Backend> ModuleDisplay for ThetaSlot<B> {}
