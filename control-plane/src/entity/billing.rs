//! Stripe billing tables.

/// A tenant's Stripe customer and subscription.
pub mod tenant_billing {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_billing")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(unique)]
        pub stripe_customer_id: String,
        pub stripe_subscription_id: Option<String>,
        pub subscription_status: Option<String>,
        pub subscription_item_id: Option<String>,
        pub metered_item_id: Option<String>,
        /// `created` of the newest subscription event applied (older ones are ignored).
        pub subscription_event_at: Option<DateTimeUtc>,
        /// `created` of the newest invoice event applied.
        pub invoice_event_at: Option<DateTimeUtc>,
        pub payment_failed_at: Option<DateTimeUtc>,
        pub grace_until: Option<DateTimeUtc>,
        /// Metered usage of the hours before this was reported to Stripe.
        pub usage_reported_until: Option<DateTimeUtc>,
        pub suspended_by_billing: bool,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The Stripe prices of a plan.
pub mod plan_price {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "plan_price")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub plan_id: String,
        pub stripe_price_id: String,
        pub stripe_metered_price_id: Option<String>,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A Stripe event handled already.
pub mod stripe_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "stripe_event")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
