//! Cart-pole: a cart on a rail (prismatic joint) with a pole hinged on it
//! (revolute joint), pushed by one horizontal force. Constants match the
//! classic problem and the policy `scripts/make-tensor-models` trains.
//!
//! Observations: `x` (m), `x_dot` (m/s), `theta` (rad, 0 upright, positive
//! leaning toward +x), `theta_dot` (rad/s). Actuator: `force` (N, +x).

use std::time::Duration;

use rapier2d::prelude::*;

use super::{SensorNoise, substeps};
use crate::world::{Actuator, World, WorldOptions};

const CART_MASS: f32 = 1.0;
const POLE_MASS: f32 = 0.1;
const POLE_HALF_LENGTH: f32 = 0.5;
const GRAVITY: f32 = 9.81;
/// The largest force the cart's motor gives.
pub const MAX_FORCE: f32 = 20.0;
/// Tilt at the start of an episode (rad).
const INITIAL_TILT: f32 = 0.1;
/// Past this tilt the pole has fallen.
const FALLEN_ANGLE: f32 = 0.8;
/// Half the rail's length: past it the cart is off the rail.
const RAIL_HALF_LENGTH: f32 = 4.8;

const OBSERVATIONS: &[&str] = &["x", "x_dot", "theta", "theta_dot"];
const ACTUATORS: &[Actuator] = &[Actuator {
    name: "force",
    min: -MAX_FORCE,
    max: MAX_FORCE,
}];

/// The cart-pole world.
pub struct CartPole {
    physics: PhysicsWorld,
    cart: RigidBodyHandle,
    pole: RigidBodyHandle,
    noise: SensorNoise,
    time: f64,
    worst_angle: f32,
    worst_offset: f32,
}

impl std::fmt::Debug for CartPole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CartPole")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CartPole {
    pub fn new(options: &WorldOptions) -> Self {
        let mut physics = PhysicsWorld {
            gravity: Vector::new(0.0, -GRAVITY),
            ..PhysicsWorld::default()
        };
        let rail = physics.bodies.insert(RigidBodyBuilder::fixed());
        // No colliders: the bodies' masses are given directly, and nothing
        // collides.
        let cart = physics.bodies.insert(
            RigidBodyBuilder::dynamic().additional_mass_properties(MassProperties::new(
                Vector::ZERO,
                CART_MASS,
                0.1,
            )),
        );
        // A uniform rod: its centre half a length above the hinge.
        let rod_inertia = POLE_MASS * (2.0 * POLE_HALF_LENGTH).powi(2) / 12.0;
        let rapier_angle = -INITIAL_TILT;
        let pole = physics.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(Vector::new(
                    -POLE_HALF_LENGTH * rapier_angle.sin(),
                    POLE_HALF_LENGTH * rapier_angle.cos(),
                ))
                .rotation(rapier_angle)
                .additional_mass_properties(MassProperties::new(
                    Vector::ZERO,
                    POLE_MASS,
                    rod_inertia,
                )),
        );
        physics
            .impulse_joints
            .insert(rail, cart, PrismaticJointBuilder::new(Vector::X), true);
        physics.impulse_joints.insert(
            cart,
            pole,
            RevoluteJointBuilder::new()
                .local_anchor1(Vector::ZERO)
                .local_anchor2(Vector::new(0.0, -POLE_HALF_LENGTH)),
            true,
        );
        CartPole {
            physics,
            cart,
            pole,
            noise: SensorNoise::new(options.seed, options.sensor_noise),
            time: 0.0,
            worst_angle: INITIAL_TILT,
            worst_offset: 0.0,
        }
    }

    /// `[x, x_dot, theta, theta_dot]`, exact.
    pub fn state(&self) -> [f32; 4] {
        let cart = &self.physics.bodies[self.cart];
        let pole = &self.physics.bodies[self.pole];
        // rapier's angles grow counter-clockwise: leaning toward -x.
        [
            cart.translation().x,
            cart.linvel().x,
            -pole.rotation().angle(),
            -pole.angvel(),
        ]
    }
}

impl World for CartPole {
    fn name(&self) -> &'static str {
        "cartpole"
    }

    fn observations(&self) -> &'static [&'static str] {
        OBSERVATIONS
    }

    fn actuators(&self) -> &'static [Actuator] {
        ACTUATORS
    }

    fn observe(&mut self, values: &mut [f32]) {
        for (value, exact) in values.iter_mut().zip(self.state()) {
            *value = self.noise.read(exact);
        }
    }

    fn safe_action(&self, action: &mut [f32]) {
        action.fill(0.0);
    }

    fn advance(&mut self, action: &[f32], dt: Duration) {
        let force = action.first().copied().unwrap_or(0.0);
        let (steps, step) = substeps(dt);
        self.physics.integration_parameters.dt = step;
        let cart = &mut self.physics.bodies[self.cart];
        cart.reset_forces(true);
        cart.add_force(Vector::new(force, 0.0), true);
        for _ in 0..steps {
            self.physics.step();
        }
        self.time += dt.as_secs_f64();
        let [x, _, theta, _] = self.state();
        self.worst_angle = self.worst_angle.max(theta.abs());
        self.worst_offset = self.worst_offset.max(x.abs());
    }

    fn failure(&self) -> Option<String> {
        let [x, _, theta, _] = self.state();
        // NaN (the simulation blew up) fails too.
        if theta.is_nan() || theta.abs() >= FALLEN_ANGLE {
            return Some(format!("the pole fell (angle {theta:.2} rad)"));
        }
        if x.is_nan() || x.abs() >= RAIL_HALF_LENGTH {
            return Some(format!("the cart left the rail (x = {x:.2} m)"));
        }
        None
    }

    fn report(&self) -> Vec<(&'static str, f64)> {
        let [x, _, theta, _] = self.state();
        vec![
            ("max_abs_angle_rad", f64::from(self.worst_angle)),
            ("max_abs_x_m", f64::from(self.worst_offset)),
            ("final_angle_rad", f64::from(theta)),
            ("final_x_m", f64::from(x)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut world: CartPole, seconds: f32, policy: impl Fn([f32; 4]) -> f32) -> CartPole {
        let dt = Duration::from_millis(10);
        for _ in 0..(seconds / 0.01) as usize {
            let force = policy(world.state()).clamp(-MAX_FORCE, MAX_FORCE);
            world.advance(&[force], dt);
            if world.failure().is_some() {
                break;
            }
        }
        world
    }

    #[test]
    fn an_unpushed_pole_falls_toward_its_tilt() {
        let world = run(CartPole::new(&WorldOptions::default()), 3.0, |_| 0.0);
        let failure = world.failure().expect("the pole falls");
        assert!(failure.contains("fell"), "{failure}");
        // Tilted toward +x at the start, it falls toward +x.
        assert!(world.state()[2] > 0.0);
    }

    #[test]
    fn a_linear_state_feedback_keeps_it_upright() {
        // A textbook LQR gain for these constants (dt = 10 ms).
        let gain = [-1.0, -2.0, -30.0, -7.0];
        let world = run(CartPole::new(&WorldOptions::default()), 10.0, |state| {
            -gain.iter().zip(state).map(|(k, s)| k * s).sum::<f32>()
        });
        assert_eq!(world.failure(), None);
        let [x, _, theta, _] = world.state();
        assert!(theta.abs() < 0.02 && x.abs() < 0.5, "{:?}", world.state());
    }

    #[test]
    fn the_rail_holds_the_cart_level_and_the_hinge_holds_the_pole() {
        let mut world = CartPole::new(&WorldOptions::default());
        for _ in 0..100 {
            world.advance(&[5.0], Duration::from_millis(10));
        }
        let cart = &world.physics.bodies[world.cart];
        let pole = &world.physics.bodies[world.pole];
        assert!(cart.translation().y.abs() < 1e-3);
        let hinge = pole.translation()
            - Vector::new(
                -POLE_HALF_LENGTH * pole.rotation().angle().sin(),
                POLE_HALF_LENGTH * pole.rotation().angle().cos(),
            );
        assert!((hinge - cart.translation()).length() < 1e-2, "{hinge:?}");
        // 5 N on 1.1 kg for 1 s: about 4.5 m/s.
        assert!(cart.linvel().x > 3.0, "{}", cart.linvel().x);
    }
}
