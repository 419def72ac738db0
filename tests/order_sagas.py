"""The order saga with its payment sub-saga, for `statesaga --saga order_sagas:order`."""

from statesaga.examples.order import build_order

order = build_order()
