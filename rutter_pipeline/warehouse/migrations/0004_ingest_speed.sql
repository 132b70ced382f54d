-- Cheaper merges (issue 5, measured in benchmarks/RESULTS.md). Hand-written: the generator does not
-- render constraints or storage parameters.
--
-- 1. Child rows are tied to their parent by the merge itself: a parent's children are deleted and
--    rewritten in the transaction that writes the parent, and children of a removed parent are
--    deleted before it. The foreign keys re-checked every inserted line item and variant against
--    its parent (an index probe and a row lock each, ~13% of an order merge) to prove what the
--    merge already guarantees, so they go. Nothing relied on their ON DELETE CASCADE.
-- 2. Landed records stay inline in their landing row up to a page (toast_tuple_target), instead
--    of moving out of line into the TOAST table once a row passes 2 kB (most orders do): landing
--    writes one heap tuple instead of a heap tuple plus TOAST chunks and their index entries, and
--    the merge reads them back without a TOAST index lookup per record.
-- depends: 0003_marts

ALTER TABLE rutter.order_line_items DROP CONSTRAINT order_line_items_connection_id_order_id_fkey;

ALTER TABLE rutter.product_variants DROP CONSTRAINT product_variants_connection_id_product_id_fkey;

ALTER TABLE landing.orders SET (toast_tuple_target = 8160);

ALTER TABLE landing.products SET (toast_tuple_target = 8160);

ALTER TABLE landing.customers SET (toast_tuple_target = 8160);

ALTER TABLE landing.transactions SET (toast_tuple_target = 8160);
