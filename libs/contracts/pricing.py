"""Pricing commands and replies (`pricing.commands.v1`)."""

from typing import Literal

from pydantic import Field

from .base import Message
from .cart import CartLine, CartView, CheckoutContinuation
from .fields import BaseQuantity, CartId, CartLineId, CheckoutId, Count, Currency, CustomerId, Minor, Name, Sku, Uom
from .money import TaxCategory

PriceSource = Literal["customer", "price_list", "list"]


class ProductView(Message):
    type: Literal["ProductView"] = "ProductView"
    sku: Sku
    name: Name
    base_uom: Uom
    units: dict[Uom, Count]
    tax_category: TaxCategory
    unit_price: Minor | None = Field(description="per base unit, for this customer when one is named")
    currency: Currency
    price_source: PriceSource | None


class ProductList(Message):
    type: Literal["ProductList"] = "ProductList"
    products: list[ProductView]
    has_more: bool


class ListProducts(Message):
    type: Literal["ListProducts"] = "ListProducts"
    customer_id: CustomerId | None = None
    limit: int = Field(default=20, ge=1, le=100)
    starting_after: Sku | None = None


class GetProduct(Message):
    type: Literal["GetProduct"] = "GetProduct"
    sku: Sku
    customer_id: CustomerId | None = None


class LineToPrice(Message):
    line_id: CartLineId
    sku: Sku
    base_quantity: BaseQuantity


class PriceLines(Message):
    type: Literal["PriceLines"] = "PriceLines"
    cart_id: CartId
    customer_id: CustomerId
    lines: list[LineToPrice]


class PricedLine(Message):
    line_id: CartLineId
    sku: Sku
    base_quantity: BaseQuantity
    unit_price: Minor
    price_source: PriceSource
    subtotal: Minor
    tax_category: TaxCategory
    tax_rate_bp: int
    tax: Minor
    total: Minor


class LinesPriced(Message):
    type: Literal["LinesPriced"] = "LinesPriced"
    cart_id: CartId
    currency: Currency
    lines: list[PricedLine]
    subtotal: Minor
    tax: Minor
    total: Minor


class PriceCheckout(Message):
    """A frozen cart handed on by the cart (FreezeCart with `then`): price it, answer the saga with
    `CheckoutPriced`, and send `ReserveCredit` for its total to credit on the saga's reply_to and correlation."""

    type: Literal["PriceCheckout"] = "PriceCheckout"
    cart_id: CartId
    customer_id: CustomerId
    checkout_id: CheckoutId
    cart_version: int
    lines: list[CartLine]
    then: CheckoutContinuation


class CheckoutPriced(Message):
    """The frozen lines and their prices, for the saga to build the order from."""

    type: Literal["CheckoutPriced"] = "CheckoutPriced"
    cart_id: CartId
    checkout_id: CheckoutId
    cart_version: int
    lines: list[CartLine]
    priced: LinesPriced


class PriceCart(Message):
    """A cart handed on by the cart (GetCart with `then_price`): answer the asker with `CartPriced`."""

    type: Literal["PriceCart"] = "PriceCart"
    cart: CartView


class CartPriced(Message):
    type: Literal["CartPriced"] = "CartPriced"
    cart: CartView
    priced: LinesPriced
