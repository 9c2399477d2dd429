// PgJDBC against meshgate's Postgres port, as DBeaver, Metabase and Tableau use it:
// connect, read metadata, run a masked query, bind a parameter, get an error.
// Run: java -cp /usr/share/java/postgresql.jar PgJdbc.java <jdbc-url> <user>
// Prints one `key=value` line per check; the Python test asserts on them.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class PgJdbc {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        String user = args[1];
        try (Connection conn = DriverManager.getConnection(url, user, user)) {
            DatabaseMetaData meta = conn.getMetaData();
            System.out.println("product=" + meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
            try (ResultSet schemas = meta.getSchemas()) {
                StringBuilder names = new StringBuilder();
                while (schemas.next()) {
                    names.append(schemas.getString("TABLE_SCHEM")).append(',');
                }
                System.out.println("schemas=" + names);
            }
            try (ResultSet tables = meta.getTables(null, "customers", "%", new String[] {"TABLE"})) {
                StringBuilder names = new StringBuilder();
                while (tables.next()) {
                    names.append(tables.getString("TABLE_NAME")).append(',');
                }
                System.out.println("tables=" + names);
            }
            try (ResultSet columns = meta.getColumns(null, "customers", "customer_profiles", "%")) {
                StringBuilder names = new StringBuilder();
                while (columns.next()) {
                    names.append(columns.getString("COLUMN_NAME")).append(':')
                        .append(columns.getString("TYPE_NAME")).append(',');
                }
                System.out.println("columns=" + names);
            }
            try (ResultSet columns = meta.getColumns(null, "checkout", "checkout_orders_summary", "order_id")) {
                columns.next();
                System.out.println("remarks=" + columns.getString("REMARKS"));
            }
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT email FROM customers.customer_profiles ORDER BY customer_id LIMIT 1")) {
                rs.next();
                System.out.println("email=" + rs.getString(1));
            }
            // Prepared and executed more than prepareThreshold (5) times: PgJDBC then
            // switches to a named server-side statement.
            try (PreparedStatement ps = conn.prepareStatement(
                     "SELECT count(*) FROM inventory.stock_levels WHERE quantity > ?")) {
                long last = -1;
                for (int i = 0; i < 7; i++) {
                    ps.setLong(1, 0);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        last = rs.getLong(1);
                    }
                }
                System.out.println("count=" + last);
            }
            try (PreparedStatement ps = conn.prepareStatement(
                     "SELECT customer_id, birth_date, signup_at FROM customers.customer_profiles WHERE customer_id = ?")) {
                ps.setString(1, "C000001");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    System.out.println("row=" + rs.getString(1) + " " + rs.getDate(2) + " " + (rs.getTimestamp(3) != null));
                }
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM lab.no_such_table");
                System.out.println("error=none");
            } catch (SQLException e) {
                System.out.println("error=" + e.getSQLState());
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                rs.next();
                System.out.println("after_error=" + rs.getInt(1));
            }
        }
    }
}
